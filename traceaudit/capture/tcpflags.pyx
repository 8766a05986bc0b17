"""TCP flag bits (declared in ``tcpflags.pxd``, shared by the compiled core and Python)."""
