"""Reporters: pure functions from analysis results to text or bytes, and the file writer."""
