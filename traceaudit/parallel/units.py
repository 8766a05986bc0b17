"""One unit of work (a capture file or a rotated set) read where it runs: the function every
worker calls, and what it returns."""

from __future__ import annotations

import gc
import operator
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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

    # Findings cross a process boundary as tuples of their fields: pickling tens of thousands
    # of slotted dataclass instances one by one (through Python-level __getstate__ and
    # __setstate__) took 0.25 s for 17,500 findings, on the parent's serial path.
    def __getstate__(self) -> dict:
        return {"analysis": self.analysis, "findings": _packed(self.findings)}

    def __setstate__(self, state: dict) -> None:
        self.analysis = state["analysis"]
        self.findings = _unpacked(state["findings"])


def _packed(findings: list[Finding]) -> list[tuple]:
    from traceaudit.rules.model import Finding
    fields = _finding_fields(Finding)
    get = operator.attrgetter(*fields)
    at = fields.index("severity")
    return [(*t[:at], int(t[at]), *t[at + 1:]) for t in map(get, findings)]


def _unpacked(rows: list[tuple]) -> list[Finding]:
    from traceaudit.rules.model import Finding, Severity
    at = _finding_fields(Finding).index("severity")
    levels = {int(s): s for s in Severity}
    return [Finding(*t[:at], levels[t[at]], *t[at + 1:]) for t in rows]


def _finding_fields(cls) -> tuple[str, ...]:
    import dataclasses
    return tuple(f.name for f in dataclasses.fields(cls))


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
        gc.collect()
    return done


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
