"""traceaudit: how every TCP connection in a capture ended, and which endings are bugs."""

__version__ = "0.1.0"
