"""Units read on a Dask distributed cluster (``--scheduler tcp://HOST:PORT``).

Workers read the captures from paths they all see (shared storage) and send back what the
command's step keeps (``cluster_step``: for ``analyze`` without --html, as local workers,
the summary's columns, the findings and the capture's JSON part rendered there) as
compressed Arrow tables (``arrow_results``); the client turns them back into what its
reports read. A worker lost while it holds
a unit (killed, out of memory) is replaced and the unit read again by another: the
scheduler's own rescheduling, plus ``RETRIES`` for an exception that escapes a unit.
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import TYPE_CHECKING, Callable, Iterator

from traceaudit import stopping
from traceaudit.errors import CaptureError, ClusterError
from traceaudit.parallel.arrow_results import read_unit_as_arrow, unpacked_all
from traceaudit.parallel.runner import in_process, outcome, remote_options, worker_readable
from traceaudit.parallel.units import Done
from traceaudit.pipeline import ReadOptions

if TYPE_CHECKING:
    from traceaudit.capture import CaptureStats
    from traceaudit.parallel.steps import Step

RETRIES = 3
CONNECT_TIMEOUT_S = 20
SCHEDULER_ENV = "TRACEAUDIT_SCHEDULER"


def cluster_units(units: list, options: ReadOptions, step: Step | None, address: str,
                  progress: Callable[[CaptureStats], None] | None = None) -> Iterator[Done]:
    """As ``runner.read_units``, each worker-readable unit a task on the cluster at
    ``address`` (standard input and pipes are read here)."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("--scheduler needs Dask distributed: pip install "
                           "'traceaudit[cluster]'") from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler {address}: {exc}") from None
    step = cluster_step(step)
    remote = remote_options(options, step)
    received = partial(unpacked_all, json_dir=getattr(step, "json_dir", None))
    try:
        futures = [client.submit(read_unit_as_arrow, u, remote, step, pure=False,
                                 retries=RETRIES,
                                 key=f"traceaudit-unit-{i}-{_token()}")
                   if worker_readable(u) else None for i, u in enumerate(units)]
        for unit, future in zip(units, futures):
            if future is None:
                yield from in_process([unit], options, step, progress)
            else:
                while not future.done():            # (a stop is checked while waiting)
                    stopping.check()
                    time.sleep(stopping.SLICE_S)
                yield from _said_for_relative_paths(outcome(future, unit, options,
                                                            received))
                future.release()
    finally:
        client.close()


def cluster_step(step: Step | None) -> Step | None:
    """The step as a cluster's workers run it. ``analyze`` without --html: as several local
    readers do, each worker renders its captures' part of the JSON report and reads a large
    capture with flat memory, and what comes back is the summary's columns and that text
    (``steps.Audit.with_several_readers``). With --html a flat read could only cross as files
    of the machine that made it: the workers read whole."""
    from traceaudit.parallel.steps import Audit
    if isinstance(step, Audit) and not step.keep_excerpts:
        return step.with_several_readers()
    return step


def _said_for_relative_paths(done: list[Done]) -> list[Done]:
    """A capture given by a relative path that a worker could not open, though it is there
    for this process: a worker opens it from its own working directory. The error says so,
    and what to do."""
    for d in done:
        error = d.analysis.stats.error
        if error is not None and error.slug == "open" and not os.path.isabs(error.path) \
                and os.path.exists(error.path):
            d.analysis.stats.error = CaptureError(
                error.path, f"{error.reason} on a Dask worker, which opens a relative path "
                            f"from its own working directory: give an absolute path, or "
                            f"start the workers in {os.getcwd()}", slug="open")
    return done


def _token() -> str:
    import uuid
    return uuid.uuid4().hex[:12]
