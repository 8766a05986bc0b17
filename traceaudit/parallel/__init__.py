"""Using more than one core: a capture split across worker processes (``shares``)."""
