"""Process memory settings for streaming: freed batch and working arrays go back to the system.

glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
arrays of a few MB come from the heap and their pages stay resident when freed: a streaming
reader that allocates fresh batch columns then grows with the file instead of staying flat.
A fixed threshold keeps every array of ``MMAP_THRESHOLD`` bytes or more in its own mapping,
returned to the system on free. Arrow (pandas' string columns, the CSV writer) is switched to
the system allocator for the same reason (its own pool keeps freed memory).

``tune()`` is called once, when the built-in reader is first used; it does nothing on
platforms without glibc's ``mallopt``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

MMAP_THRESHOLD = 1 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_done = False


def tune() -> None:
    global _done
    if _done:
        return
    _done = True
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
    if "pyarrow" in sys.modules:
        tune_arrow()


_arrow_done = False


def tune_arrow() -> None:
    """Arrow allocates from the system allocator (call once pyarrow is, or is to be, used)."""
    global _arrow_done
    if _arrow_done:
        return
    _arrow_done = True
    import pyarrow as pa
    try:
        pa.set_memory_pool(pa.system_memory_pool())
    except (AttributeError, NotImplementedError, OSError):
        pass                              # an Arrow build without it: keep its default
