"""Read ahead: decode the next batches in a background thread while the caller works on this one.

The built-in reader's kernels (record walk, decode) and the stages after it (flow assignment,
trackers) are compiled with ``nogil=True``, so on a machine with two cores the reader and the
trackers really run at once: the whole pipeline costs about the larger of the two instead of
their sum. Batches arrive in the same order and are the same objects as without read-ahead;
an exception in the reader is raised in the caller at the point where the stream broke, after
every batch read before it.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

from traceaudit import stopping

T = TypeVar("T")

#: batches decoded ahead of the one being used (each is at most a few MB)
DEFAULT_DEPTH = 2
_END = object()
_POLL_S = 0.05


def read_ahead(make_iter: Callable[[], Iterator[T]], depth: int = DEFAULT_DEPTH) -> Iterator[T]:
    """Iterate ``make_iter()`` in a background thread, at most ``depth`` items ahead.

    The iterator is created, run and closed in that thread. Leaving the loop early (break,
    exception, close()) stops the thread before this generator returns.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            it = make_iter()
            try:
                for item in it:
                    if not put((item, None)):
                        return
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:          # handed to the caller, raised there
            put((_END, exc))
            return
        put((_END, None))

    worker = threading.Thread(target=produce, name="traceaudit-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item, exc = items.get(timeout=stopping.SLICE_S)
            except queue.Empty:
                stopping.check()
                continue
            if item is _END:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        # a thread blocked in a read of a pipe is not waited for when the run stops (it is a
        # daemon: it goes with the process)
        while worker.is_alive() and stopping.asked() is None:
            worker.join(stopping.SLICE_S)
