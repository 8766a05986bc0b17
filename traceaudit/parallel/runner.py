"""Units read in order here, in worker processes (``--jobs``) or on a Dask cluster
(``--scheduler``); results are yielded in input order whichever way they were read."""

from __future__ import annotations

import gc
import os
import stat
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from traceaudit import stopping
from traceaudit.errors import capture_failure
from traceaudit.parallel.units import Done, apply_step, collect_if_failed
from traceaudit.pipeline import ReadOptions, analyze_captures, failed_analysis

if TYPE_CHECKING:
    from concurrent.futures import Future

    from traceaudit.capture import CaptureSet, CaptureStats
    from traceaudit.parallel.steps import Step

Unit = "Path | CaptureSet"

#: with this set (a size in bytes), one capture file at least that large, alone in its run,
#: is split across the workers by flow hash (``shares``) instead of being read by one. Off by
#: default: on the 2-core machine it measured slower than one read (docs/parallel.md).
SPLIT_ENV = "TRACEAUDIT_SPLIT_MIN_BYTES"

#: without --jobs, captures smaller than this in all are read here: starting the workers
#: (~0.5 s of CPU) would cost more than it saves (sample_pcaps/: 1.2 s in one process, 1.9 s
#: with two workers)
POOL_MIN_BYTES = 64 << 20


def default_jobs() -> int:
    """The cores this process may run on (``--jobs`` default)."""
    count = getattr(os, "process_cpu_count", None)          # Python 3.13
    if count is not None:
        return max(1, count() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def read_units(units: Iterable[Unit], options: ReadOptions, step: Step | None, *,
               jobs: int | None = 1, scheduler: str | None = None,
               progress: Callable[[CaptureStats], None] | None = None) -> Iterator[Done]:
    """Every unit read and ``step`` applied, in input order. One job (or a single unit a
    worker could read) runs here, exactly as ``pipeline.analyze_captures``; ``progress`` sees
    the packets of what is read here. ``jobs``: how many readers (cores) at once, 1 meaning
    this process alone on one core; None: the cores this process may use, with workers only
    if the captures are large enough to be worth it (``POOL_MIN_BYTES``)."""
    units = list(units)
    if scheduler:
        from traceaudit.parallel.cluster import cluster_units
        yield from cluster_units(units, options, step, scheduler, progress)
        return
    if jobs == 1:
        # one core: this process without its read-ahead thread (which decodes on another)
        options = replace(options, read_ahead=False)
    elif jobs is None:
        if _bytes(units) < POOL_MIN_BYTES:
            yield from in_process(units, options, step, progress)
            return
        jobs = default_jobs()
    if jobs > 1 and len(units) == 1 and _large_file(units[0]):
        yield from _split(units[0], options, step, jobs)
        return
    if jobs <= 1 or sum(map(worker_readable, units)) < 2:
        yield from in_process(units, options, step, progress)
        return
    yield from _pooled(units, options, step, jobs, progress)


def in_process(units: list[Unit], options: ReadOptions, step: Step | None,
               progress: Callable[[CaptureStats], None] | None = None) -> Iterator[Done]:
    """The units read here, one after another (no garbage collection between them unless a
    capture failed: ``units.collect_if_failed``)."""
    for unit in units:
        stopping.check()
        done = []
        for analysis in analyze_captures([unit], options, progress):
            done.append(apply_step(analysis, step, options))
            del analysis
            yield done[-1]
        collect_if_failed(done)


def remote_options(options: ReadOptions, step: Step | None = None) -> ReadOptions:
    """How another process reads. ``analyze``'s flat read leaves its connections in temporary
    files of the reading process: a worker reads so only where the step makes it portable
    (``steps.Audit.reads_flat_anywhere``: it sends back the summary's columns and the JSON
    report's part, already rendered, or for --html the flat read with its files); otherwise
    (Dask, ``states``) it keeps its capture whole (its memory follows that capture's
    connections)."""
    if options.retire is not None and options.retire.facts and \
            not getattr(step, "reads_flat_anywhere", False):
        return replace(options, retire=None)
    return options


def worker_readable(unit: Unit) -> bool:
    """Whether another process can read the unit: regular files only (standard input, a pipe
    or a device is read once, here)."""
    files = getattr(unit, "files", (unit,))
    try:
        return all(stat.S_ISREG(os.stat(f).st_mode) for f in files)
    except OSError:
        return False             # not found: the error is made (and said) here, as before


def _bytes(units: list[Unit]) -> int:
    return sum(map(unit_bytes, filter(worker_readable, units)))


def unit_bytes(unit: Unit) -> int:
    """The size of a unit's files together (0 when one cannot be seen)."""
    try:
        return sum(os.stat(f).st_size for f in getattr(unit, "files", (unit,)))
    except OSError:
        return 0


def worker_context():
    """How worker processes start: forked from this process while it runs a single thread
    (on Linux), else from a fork server.

    A worker forked from here has every module imported already and starts reading at once
    (~10 ms); the fork server must first start an interpreter and import the reader (~0.25
    s on the other core). Measured on the 8-capture batch, 2 cores, 6 interleaved runs:
    ``--jobs 2`` 2.62 -> 2.39 s (1.60x -> 1.76x ``--jobs 1``). A fork copies every lock
    another Python thread might hold at that moment (standard error's, the import lock), so
    with any thread running (a read-ahead decoder, a caller's own) the fork server is used.
    Native threads of libraries (OpenBLAS's) release theirs in their own fork handlers."""
    import multiprocessing
    import threading
    if sys.platform.startswith("linux") and threading.active_count() == 1 and \
            "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return forkserver()


def forkserver():
    """The fork server's start method (``worker_context``): the server imports the reader
    once; each worker forks from it."""
    import multiprocessing
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["traceaudit.parallel.units"])
    return context


def remove_forkserver_directory() -> None:
    """Remove the directory multiprocessing made for the fork server's socket (``pymp-*`` in
    the temporary directory), which its exit handler would have removed: the command line
    ends without the interpreter's teardown (``cli.run``), and every run with workers left
    one behind. Called once no worker will start again."""
    if "multiprocessing.forkserver" not in sys.modules:
        return
    import shutil
    from multiprocessing import util
    shutil.rmtree(util.get_temp_dir(), ignore_errors=True)


def _pool(workers: int, handoff: str):
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(workers, mp_context=worker_context(), initializer=_worker_started,
                               initargs=(os.getpid(), handoff))


def _large_file(unit: Unit) -> bool:
    """A single file (not a set: its pieces are checked as they are read) worth splitting."""
    if not isinstance(unit, Path) or not worker_readable(unit):
        return False
    try:
        least = int(os.environ.get(SPLIT_ENV, ""))
    except ValueError:
        return False
    return unit.stat().st_size >= least


def _split(unit: Path, options: ReadOptions, step: Step | None, jobs: int) -> Iterator[Done]:
    """One capture read as ``jobs`` shares by flow hash, merged into what one read gives; the
    step runs here, on the merged analysis. This process reads share 0 itself while
    ``jobs - 1`` workers read the others (their results cross as files, as in
    ``alongside``)."""
    from traceaudit.parallel.alongside import (handed_over, handoff_directory, stop_pool,
                                               waited_for)
    from traceaudit.parallel.shares import merge_shares, share_task, share_to_file
    from traceaudit.parallel.steps import FlowsOnly
    flows_only = isinstance(step, FlowsOnly)
    if jobs >= default_jobs():
        options = replace(options, read_ahead=False)    # a reader a core (as ``_pooled``)
    if _judged_in_shares(step):
        yield _split_judged(unit, options, step, jobs)
        return
    with handoff_directory() as handoff:
        pool = _pool(jobs - 1, handoff)
        complete = False
        try:
            others = [pool.submit(share_to_file, handoff, unit, options, k, jobs, flows_only)
                      for k in range(1, jobs)]
            parts = [share_task(unit, options, 0, jobs, flows_only=flows_only)]
            parts += [handed_over(waited_for(f).result()) for f in others]
            analysis = merge_shares(parts)
            complete = True
        except Exception as exc:
            analysis = failed_analysis(str(unit), capture_failure(str(unit), exc), options)
            complete = True
        finally:
            stop_pool(pool, complete, handoff)
    yield apply_step(analysis, step, options)


def _judged_in_shares(step: Step | None) -> bool:
    """Whether the shares run the rules themselves (``share_rules``): ``analyze`` whose
    reports read no timeline (no JSON or HTML report), with rules that all say what they
    read of other connections."""
    from traceaudit.parallel.share_rules import applies
    from traceaudit.parallel.steps import Audit
    return isinstance(step, Audit) and not step.keep_events and not step.keep_excerpts and \
        applies(step.config)


def _split_judged(unit: Path, options: ReadOptions, step, jobs: int) -> Done:
    """``_split`` with the rules run in the shares (``share_rules``): this process holds
    share 0, one worker each of the others (a pool of one, so that every round of a share
    reaches the process that holds it)."""
    from traceaudit.audit import slimmed
    from traceaudit.parallel import share_rules as sr
    from traceaudit.parallel.alongside import (handed_over, handoff_directory, stop_pool,
                                               waited_for)
    from traceaudit.parallel.shares import analyze_share, global_ids, merge_shares
    config = step.config
    with handoff_directory() as handoff:
        pools, complete = [], False
        try:
            reads = []
            for k in range(1, jobs):
                # (one after the other: from the second on, a fork server starts them, as a
                # pool's thread then runs: ``worker_context``)
                pools.append(_pool(1, handoff))
                reads.append(pools[-1].submit(sr.read, unit, options, k, jobs))
            mine = analyze_share(unit, options, 0, jobs)
            got = [(sr.first_frames(mine), mine.stats.error is None)]
            got += [waited_for(f).result() for f in reads]
            if not all(ok for _, ok in got):
                # a damaged capture: merged and judged here, as one read would judge it
                parts = [mine] + [handed_over(waited_for(pool.submit(
                    sr.fallback, k, handoff)).result()) for k, pool in enumerate(pools, 1)]
                done = apply_step(merge_shares(parts), step, options)
            else:
                ids = global_ids([first for first, _ in got])
                asked = [pool.submit(sr.summarize, k, ids[k], config)
                         for k, pool in enumerate(pools, 1)]
                own = sr.Globalised(mine, ids[0])
                totals = sr.merged_totals([sr.summaries(own, config)] +
                                          [waited_for(f).result() for f in asked], config)
                asked = [pool.submit(sr.findings, k, totals, False, config, handoff)
                         for k, pool in enumerate(pools, 1)]
                found = [sr.share_findings(own, totals, True, config)]
                tables = [sr.flow_table_only(mine)]
                del own, mine
                for f in asked:
                    table, theirs = handed_over(waited_for(f).result())
                    tables.append(table)
                    found.append(theirs)
                analysis = slimmed(merge_shares(tables), keep_excerpts=False,
                                   keep_events=False, whole_table=False)
                done = Done(analysis, sr.merged_findings(found) if step.keep_findings
                            else sr.counted(found))
            complete = True
        except Exception as exc:
            done = Done(failed_analysis(str(unit), capture_failure(str(unit), exc), options))
            complete = True
        finally:
            for pool in pools:
                stop_pool(pool, complete, handoff)
    return done


def _pooled(units: list[Unit], options: ReadOptions, step: Step | None, jobs: int,
            progress) -> Iterator[Done]:
    """``jobs`` readers: this process and ``jobs - 1`` workers (``parallel.alongside``);
    a unit only this process can read (standard input, a pipe) is read here at its turn."""
    from traceaudit.parallel.alongside import read_alongside
    from traceaudit.parallel.steps import Audit
    if isinstance(step, Audit):
        step = step.with_several_readers()
    remote_read, here_read = remote_options(options, step), options
    if jobs >= default_jobs():
        # a reader a core: a read-ahead thread in each would only oversubscribe them
        # (8 synthetic captures on 2 cores: 3.60-3.88 s with it, 3.48-3.60 s without)
        remote_read = replace(remote_read, read_ahead=False)
        here_read = replace(options, read_ahead=False)

    def read_here(unit, read_options):
        return list(in_process([unit], read_options, step, progress))

    remote = [worker_readable(u) for u in units]
    workers = min(jobs - 1, sum(remote) - 1)
    for done in read_alongside(units, remote, workers, remote_read, here_read, step,
                               read_here, lambda unit, exc: failed_unit(unit, exc, options)):
        yield from done


def outcome(future: Future, unit: Unit, options: ReadOptions,
            received: Callable[[object], list[Done]] | None = None) -> list[Done]:
    """A unit's results (as ``received`` makes them of what came back, if it is given); a
    result that could not come back fails that unit alone (as an exception in the unit
    would). A worker that died breaks the pool: every unit not yet returned fails so, each
    with its own error line."""
    try:
        result = future.result()
        return received(result) if received is not None else result
    except Exception as exc:
        return failed_unit(unit, exc, options)


def failed_unit(unit: Unit, exc: BaseException | None, options: ReadOptions) -> list[Done]:
    """A unit whose results did not come back from a worker (``exc`` None or the pool broken:
    the worker died)."""
    from concurrent.futures.process import BrokenProcessPool
    if exc is None or isinstance(exc, BrokenProcessPool):
        exc = RuntimeError("the worker process reading it ended abruptly (killed, or out of "
                           "memory)")
    return [Done(failed_analysis(str(unit), capture_failure(str(unit), exc), options))]


def _worker_started(main_pid: int | None = None, handoff: str | None = None) -> None:
    """As the command line does in its own process: no automatic cyclic garbage collection
    (``units.collect_if_failed``). And the worker ends with ``main_pid``, the process that
    started it (``_end_with``); it says who it is in the hand-off directory, so that a run
    stopping early ends its own workers and no other process (``alongside.stop_pool``)."""
    gc.disable()
    gc.freeze()
    _default_signals()
    if main_pid is not None:
        _end_with(main_pid)
    if handoff is not None:
        from traceaudit.parallel.alongside import register_worker
        register_worker(handoff)


def _default_signals() -> None:
    """A worker forked from the command line's process (``worker_context``) has its signal
    handlers, which would report a stop as the run's own and wait for a safe point: a
    worker takes the signals as a fork server's do (Ctrl-C raises KeyboardInterrupt,
    SIGTERM and SIGHUP end it), and forgets a stop asked before it was forked."""
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    stopping.reset()


def _end_with(main_pid: int) -> None:
    """End this worker as soon as process ``main_pid`` ends.

    A worker is the fork server's child, not the main process's, and waits for its next task
    on a pipe it holds both ends of: when the main process is killed, or leaves without
    waiting for its workers (SIGTERM in ``cli.run``), the worker would otherwise finish its
    capture and then wait forever (and the fork server with it)."""
    import threading
    try:
        handle = os.pidfd_open(main_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):           # no pidfd (before Linux 5.3): poll
        handle = None

    def watch() -> None:
        if handle is not None:
            import select
            select.select([handle], [], [])
        else:
            import time
            while _alive(main_pid):
                time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="traceaudit-end-with-main", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
