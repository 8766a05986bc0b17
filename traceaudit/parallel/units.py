"""One unit of work (a capture file or a rotated set) read where it runs: the function every
worker calls, and what it returns."""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from traceaudit.errors import capture_failure
from traceaudit.pipeline import CaptureAnalysis, ReadOptions, analyze_captures, failed_analysis

if TYPE_CHECKING:
    from traceaudit.capture import CaptureSet
    from traceaudit.parallel.steps import Step
    from traceaudit.rules.model import Finding

#: test hook (tests/test_dask_cluster.py): ``DIR`` or ``DIR:SECONDS``. While DIR exists, the
#: first unit to start writes its process id to ``DIR/held`` and sleeps SECONDS (default 60)
#: before reading, so a test can kill the worker that holds it; every other unit (and that
#: one, run again) goes on at once.
HOLD_ENV = "TRACEAUDIT_TEST_HOLD"


@dataclass
class Done:
    """One analysis, after the command's step, and the findings the step made of it."""

    analysis: CaptureAnalysis
    findings: list[Finding] = field(default_factory=list)

    # Findings cross a process boundary parked (``retire.findings.ParkedFindings``: packed
    # batches in one buffer, with their counts and the most severe few as objects): the
    # client unpickles one block of bytes, and the terminal summary never unpacks them. As
    # objects, unpickling 17,500 findings took ~0.15 s of the client's time a capture,
    # beside its own reads.
    def __getstate__(self) -> dict:
        return {"analysis": self.analysis, "findings": parked(self.findings)}


def parked(findings) -> Sequence[Finding]:
    """``findings`` (in ``run_rules`` order) parked whole, unless they are already (or only
    their counts were kept)."""
    from traceaudit.retire.findings import CountedFindings, ParkedFindings
    if isinstance(findings, (ParkedFindings, CountedFindings)):
        return findings
    packed = ParkedFindings(keep=0)
    packed.add(list(findings))
    return packed


def apply_step(analysis: CaptureAnalysis, step: Step | None, options: ReadOptions) -> Done:
    """``step`` on one analysis; an exception in it (a bug) fails this capture alone."""
    if step is None:
        return Done(analysis)
    try:
        kept, found = step(analysis)
    except Exception as exc:
        path = analysis.stats.path
        return Done(failed_analysis(path, capture_failure(path, exc), options))
    return Done(kept, found)


def read_unit(unit: Path | CaptureSet, options: ReadOptions, step: Step | None) -> list[Done]:
    """Read one unit and apply ``step``: a list, as a set whose files do not follow each other
    in time is read as several timelines (``pipeline.analyze_captures``)."""
    _test_hold()
    done = []
    for analysis in analyze_captures([unit], options):
        done.append(apply_step(analysis, step, options))
        del analysis
    collect_if_failed(done)
    return done


def collect_if_failed(done: list[Done]) -> None:
    """Garbage collection after a read, only if a capture failed.

    Automatic collection is off (``cli.main``) and an analysis forms no reference cycle
    (tests/test_cycles.py: its memory goes as soon as nothing refers to it), so a read needs
    no collection; a full one cost ~0.08 s a 50,000-connection capture, and grows with every
    analysis a batch keeps for its report. An exception caught while reading may have left
    cycles through its traceback's frames (which hold what they were reading): those are
    collected."""
    if any(d.analysis.failed for d in done):
        gc.collect()


def _test_hold() -> None:
    spec = os.environ.get(HOLD_ENV)
    if not spec:
        return
    where, _, seconds = spec.partition(":")
    try:
        fd = os.open(os.path.join(where, "held"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except OSError:                 # held already, or no DIR: not holding now
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(float(seconds or 60))
