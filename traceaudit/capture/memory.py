"""Process memory settings for streaming: bounded, and without a page fault per array.

glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
arrays of that size come from the heap and can stay resident when freed: memory then follows
the largest arrays ever freed. A fixed threshold keeps that in check: every array of
``MMAP_THRESHOLD`` (8 MB) or more gets its own mapping, returned to the system on free, and the
heap's free top is given back once it exceeds ``TRIM_THRESHOLD`` (64 MB). Smaller arrays (a
batch's columns, the per-batch and per-sweep temporaries) come from the heap and reuse the
memory the previous batch freed. A lower threshold (1 MB, as before session 5) made every
batch's arrays fresh mappings: ~2,000 page faults a 64k-packet batch, a quarter of a one-core
run's time in the kernel; with 8 MB, `flows` on 3M packets takes 47k page faults instead of
119k (flat at 6M) and peaks at the same ~320 MB. Arrow (pandas' string columns, the CSV writer)
is switched to the system allocator (its own pool keeps freed memory).

``tune()`` is called once, when the built-in reader is first used; it does nothing on
platforms without glibc's ``mallopt``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from contextlib import contextmanager
from typing import Iterator

MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: The flat read's first pass over its spill (``retire/flat.py``, ``heap_reuse``): every
#: chunk allocates arrays of the same few sizes (its read buffer, the merged and sorted
#: bucket: 8-16 MB each at 2^18 frames a bucket), which then come from the heap and reuse the
#: previous chunk's freed blocks instead of being fresh mappings, each page faulted in and
#: zeroed again (3M packets: 87k page faults -> ~67k; same peak)
CHUNK_MMAP_THRESHOLD = 32 << 20

_done = False
_mallopt = None


def tune() -> None:
    global _done, _mallopt
    if _done:
        return
    _done = True
    if sys.platform.startswith("linux"):
        mallopt = None
        # find_library runs ldconfig (a subprocess): only when the usual name is not there
        for name in ("libc.so.6", None):
            try:
                mallopt = ctypes.CDLL(name or ctypes.util.find_library("c")).mallopt
                break
            except (OSError, AttributeError, TypeError):
                continue
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            _mallopt = mallopt
    if "pyarrow" in sys.modules:
        tune_arrow()


@contextmanager
def heap_reuse() -> Iterator[None]:
    """Within: arrays below ``CHUNK_MMAP_THRESHOLD`` come from the heap (work done a chunk
    at a time, whose freed blocks the next chunk reuses); the usual threshold after."""
    if _mallopt is None:
        yield
        return
    _mallopt(_M_MMAP_THRESHOLD, CHUNK_MMAP_THRESHOLD)
    try:
        yield
    finally:
        _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


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


_trim = None


def give_back() -> None:
    """Return the heap's free pages to the system, those between live blocks too (glibc's
    ``malloc_trim``): between chunks of work whose arrays are freed while a few long-lived
    objects made after them pin the heap (``retire/flat.py``)."""
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith("linux"):
            try:
                _trim = ctypes.CDLL("libc.so.6").malloc_trim
                _trim.argtypes = [ctypes.c_size_t]
            except (OSError, AttributeError):
                pass
    if _trim:
        _trim(0)
