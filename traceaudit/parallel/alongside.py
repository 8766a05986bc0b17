"""Worker processes and this one reading a batch together (``--jobs N``: N readers).

The units form a double-ended queue whose bounds are in shared memory. A worker's task only
says "read the next unit": it claims the front unit when it starts, so a task queued behind a
busy worker holds nothing back. This process, whenever the next result in input order is not
back yet, claims the back unit and reads it itself. So it is never idle while there is work,
pays no result transfer for what it reads, its first read overlaps the workers' start-up, and
the last units go to whichever reader is free. If a worker dies, the units nobody claimed are
still read (here); only those the dead worker held fail.
"""

from __future__ import annotations

import os
import pickle
from concurrent.futures import FIRST_COMPLETED, wait
from typing import TYPE_CHECKING, Callable, Iterator

from traceaudit import stopping
from traceaudit.errors import disk_full
from traceaudit.parallel.units import HOLD_ENV

if TYPE_CHECKING:
    from concurrent.futures import Future

    from traceaudit.parallel.steps import Step
    from traceaudit.parallel.units import Done
    from traceaudit.pipeline import ReadOptions

#: in a worker: the batch (units, shared bounds, options, step), set by its initializer
_batch: tuple | None = None


def start_worker(units: list, bounds, options: ReadOptions, step: Step | None,
                 handoff: str, spills: str, main_pid: int) -> None:
    """A worker's initializer: the batch it claims from (sent once, not with every task), the
    directory its results are left in (``read_next``) and the one where its flat reads'
    files are handed over (``retire.spill_files``); it ends with ``main_pid``."""
    global _batch
    from traceaudit.parallel.runner import _worker_started
    from traceaudit.retire import spill_files
    _worker_started(main_pid, handoff)
    spill_files.hand_over_in(spills)
    _batch = (units, bounds, options, step, handoff)


def read_next() -> tuple[int, object] | None:
    """A worker's task: claim the front unit and read it; None when none is left. Its results
    are pickled to a file in the hand-off directory, whose name is returned (``left_in``).

    Not through the pool's pipe: this process's thread that receives from it needs the GIL
    for every 64 KB read while the main thread reads captures in long compiled calls, so
    ~20 MB of results took ~0.3 s to cross, and the worker waited for it (measured: 0.26-0.35
    s idle between units). A file in memory (``/dev/shm``) is written at once and read here
    in one call."""
    from traceaudit.parallel.units import read_unit
    units, bounds, options, step, handoff = _batch
    i = claim(bounds, front=True)
    if i is None:
        return None
    return i, left_in(handoff, f"unit-{i}", read_unit(units[i], options, step))


def left_in(handoff: str, name: str, result):
    """``result`` pickled to the file ``name`` of the hand-off directory: its path; or, when
    that disk is full (or over quota), ``result`` itself, to go through the pool's pipe."""
    path = os.path.join(handoff, f"{name}.pickle")
    try:
        with open(path, "wb") as out:
            pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as exc:
        if os.path.exists(path):
            os.unlink(path)
        if disk_full(exc):
            return result
        raise
    return path


def handed_over(left):
    """What a worker left (``left_in``): read once from its file, which goes; or as it came
    through the pipe."""
    if not isinstance(left, str):
        return left
    try:
        with open(left, "rb") as f:
            return pickle.load(f)
    finally:
        os.unlink(left)


#: ``/dev/shm`` holds the workers' results only with this much free (a container's is often
#: 64 MB; a unit's results are ~10-40 MB)
SHM_FREE_BYTES = 1 << 30


def handoff_directory():
    """A new private directory for the workers' results, removed with what is left in it at
    the end (``scratch.scratch_directory``: also when a killed run left it): in memory
    (``/dev/shm``) where there is one with room (``SHM_FREE_BYTES``), else the temporary
    directory."""
    from traceaudit.scratch import scratch_directory
    shm = "/dev/shm"
    try:
        free = os.statvfs(shm)
        roomy = free.f_bavail * free.f_frsize >= SHM_FREE_BYTES and \
            os.access(shm, os.W_OK | os.X_OK)
    except OSError:
        roomy = False
    return scratch_directory("traceaudit-results-", shm if roomy else None)


def claim_order(units: list, remote: list[bool]) -> list[int]:
    """The units another process can read, largest first (their input order among equals).

    Workers claim from the front, this process from the back, and the last units claimed
    go to whichever reader is free: with the largest read first, what is left at the end is
    small, so no reader waits long alone (in input order, a large capture in the middle of a
    batch could start last and be read while the other readers idle)."""
    from traceaudit.parallel.runner import unit_bytes
    readable = [i for i, r in enumerate(remote) if r]
    size = {i: unit_bytes(units[i]) for i in readable}
    return sorted(readable, key=lambda i: -size[i])


def claim(bounds, front: bool) -> int | None:
    """The front (or back) unit nobody has claimed yet, now claimed; None if none is left."""
    with bounds.get_lock():
        first, end = bounds[0], bounds[1]
        if first >= end:
            return None
        if front:
            bounds[0] = first + 1
            return first
        bounds[1] = end - 1
        return end - 1


def read_alongside(units: list, remote: list[bool], workers: int, remote_options: ReadOptions,
                   here_options: ReadOptions, step: Step | None,
                   read_here: Callable[[object, ReadOptions], list[Done]],
                   lost: Callable[[object, BaseException], list[Done]]) -> Iterator[list[Done]]:
    """Every unit's results, in input order. ``remote[i]``: a worker can read unit i (the
    others, standard input or a pipe, are read here at their turn). ``lost(unit, exc)``: the
    results of a unit claimed by a worker that never returned it."""
    from concurrent.futures import ProcessPoolExecutor

    from traceaudit.parallel.runner import worker_context
    from traceaudit.scratch import scratch_directory
    queue = claim_order(units, remote)          # positions in it are what is claimed
    context = worker_context()
    bounds = context.Array("q", [0, len(queue)])
    # (the flat reads' files handed over on disk, in the temporary directory: not in memory)
    with handoff_directory() as handoff, scratch_directory("traceaudit-spills-") as spills:
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker,
                                   initargs=([units[i] for i in queue], bounds,
                                             remote_options, step, handoff, spills,
                                             os.getpid()))
        results: dict[int, list[Done]] = {}
        failures: list[BaseException] = []
        # a task a unit at most (a task that finds none left returns at once); workers of a
        # fork server are started beside this process's first read
        starting = Submitting(pool, len(queue),
                              in_thread=context.get_start_method() != "fork")
        running: set[Future] | None = None      # known once ``starting`` is done
        complete = False
        try:
            if os.environ.get(HOLD_ENV):
                # the test hook holds a worker's first unit: the workers start first, so
                # that one of them has claimed it before this process could read all units
                running = starting.futures(failures)
            for i, unit in enumerate(units):
                while i not in results:
                    stopping.check()
                    if not remote[i]:
                        results[i] = read_here(unit, here_options)
                        break
                    if running is None and starting.done():
                        running = starting.futures(failures)
                    if running:
                        running = _take_back(running, queue, results, failures, block=False)
                        if i in results:
                            break
                    k = claim(bounds, front=False)
                    if k is not None:
                        results[queue[k]] = read_here(units[queue[k]], here_options)
                        continue
                    if running is None:
                        running = starting.futures(failures)
                    if running:
                        running = _take_back(running, queue, results, failures, block=True)
                    else:               # its worker failed before sending it back
                        results[i] = lost(unit, failures[0] if failures else None)
                yield results.pop(i)
            complete = True
        finally:
            starting.futures([], stopped=stopping.asked() is not None)
            stop_pool(pool, complete, handoff)


#: how long a stopping run waits for the pool's start to finish, so as to shut it down whole
STOPPING_WAIT_S = 5.0


class Submitting:
    """``count`` ``read_next`` tasks submitted to ``pool``, by a thread of their own if
    ``in_thread``.

    The first submission starts the worker processes. From a fork server it waits until
    the server has forked one (it first imports the reader: ~0.2 s), so a thread submits
    while this process reads its first unit. Workers forked from this process
    (``runner.worker_context``) start at once, and must be forked while this process runs
    one thread: they are submitted here."""

    def __init__(self, pool, count: int, in_thread: bool = True) -> None:
        import threading
        self._submitted: set[Future] = set()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._submit, args=(pool, count),
                                        name="traceaudit-submit", daemon=True)
        if in_thread:
            self._thread.start()
        else:
            self._submit(pool, count)
            self._thread = None

    def _submit(self, pool, count: int) -> None:
        try:
            for _ in range(count):
                self._submitted.add(pool.submit(read_next))
        except Exception as exc:            # the pool could not start: the units nobody
            self._error = exc               # claimed are read here (a KeyboardInterrupt
                                            # while submitting here is the caller's)

    def done(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def futures(self, failures: list, stopped: bool = False) -> set[Future]:
        """The tasks submitted (once the thread is done); its error goes to ``failures``.
        ``stopped``: the run is stopping (``traceaudit.stopping``): waited for a few seconds
        at most (the worker it is starting is then ended with the pool)."""
        if stopped and self._thread is not None:
            self._thread.join(STOPPING_WAIT_S)
            if self._thread.is_alive():
                return set()                # (still adding to the set)
        while not self.done():
            self._thread.join(stopping.SLICE_S)
            stopping.check()
        if self._error is not None:
            failures.append(self._error)
            self._error = None
        return set(self._submitted)


def waited_for(future: Future) -> Future:
    """``future`` once it is done, the run's stop checked while waiting (``stopping``)."""
    _finished({future}, block=True)
    return future


def _finished(futures: set[Future], block: bool) -> tuple[set[Future], set[Future]]:
    """(finished, still running) of ``futures``; ``block``: once at least one finished,
    waiting in slices so that a stop is seen (``stopping``)."""
    finished, left = wait(futures, timeout=0, return_when=FIRST_COMPLETED)
    while block and not finished:
        stopping.check()
        finished, left = wait(futures, timeout=stopping.SLICE_S, return_when=FIRST_COMPLETED)
    return finished, left


#: a worker's name file in the hand-off directory: ``worker-PID``
WORKER_PREFIX = "worker-"


def register_worker(handoff: str) -> None:
    """In a worker as it starts: leave its process id in the hand-off directory."""
    open(os.path.join(handoff, f"{WORKER_PREFIX}{os.getpid()}"), "w").close()


def stop_pool(pool, complete: bool, handoff: str) -> None:
    """Shut the worker pool down. Stopped early (an exception, SIGTERM, the caller gone), its
    workers are ended at once instead of being waited for: one may be in the middle of a
    large capture. Only this pool's (``register_worker``): a program using the Python API
    may run processes of its own."""
    if not complete:
        import multiprocessing
        ours = {int(name[len(WORKER_PREFIX):]) for name in os.listdir(handoff)
                if name.startswith(WORKER_PREFIX)}
        for worker in multiprocessing.active_children():
            if worker.pid in ours:
                worker.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _take_back(running: set[Future], queue: list[int], results: dict, failures: list,
               block: bool) -> set[Future]:
    """The tasks still running, once the results of those that finished are in ``results``
    (``block``: wait for at least one to finish)."""
    finished, left = _finished(running, block)
    for future in finished:
        try:
            got = future.result()
            if got is not None:
                results[queue[got[0]]] = handed_over(got[1])
        except Exception as exc:         # the pool broke (a worker died), or a result that
            failures.append(exc)         # could not be sent: which unit is known only later
    return set(left)
