"""A run stopped by a signal (SIGINT, SIGTERM, SIGHUP: ``cli.run``), at a safe point.

The signal handler records the signal; the run stops where it checks (``check``): between
batches of a capture (~50 ms apart), between captures, and while it waits for a worker
(its waits are sliced). Raising from the handler itself would stop whatever the main thread
runs at that moment, the standard library's code included: a stop that landed inside
``concurrent.futures.wait`` left a future's lock taken, and the pool's shutdown then waited
for it forever. Only where the main thread blocks in a read of a pipe (``interruptible``),
which may never return, does the handler raise at once. A third signal ends the process
there and then (``cli.run``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_signal: int | None = None
_count = 0
_interruptible = False

#: how long a wait lasts before the stop is checked again (seconds)
SLICE_S = 0.1


class Stopped(SystemExit):
    """A run stopped by signal ``signum``: exit status 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)


def ask(signum: int) -> int:
    """The signal handler's part: remember ``signum`` (the first one counts); raise now if
    the main thread may be interrupted here. Returns how many stops were asked for."""
    global _signal, _count
    _count += 1
    if _signal is None:
        _signal = signum
    if _interruptible:
        raise Stopped(_signal)
    return _count


def asked() -> int | None:
    """The signal a stop was asked for by, if any."""
    return _signal


def check() -> None:
    """Raise ``Stopped`` if a stop was asked for."""
    if _signal is not None:
        raise Stopped(_signal)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within, in the main thread, a stop is raised at once (a blocking read of a pipe)."""
    global _interruptible
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = _interruptible
    _interruptible = True
    try:
        check()
        yield
    finally:
        _interruptible = before


def reset() -> None:
    """Forget a stop (tests; a worker forked from a process that was stopping)."""
    global _signal, _count
    _signal, _count = None, 0
