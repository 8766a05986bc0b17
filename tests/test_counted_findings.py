"""``analyze`` with the terminal summary alone keeps of each capture's findings only their
counts and the few the summary may show (``retire.findings.CountedFindings``): the summary is
the one a run that keeps every finding prints, in one process and with workers."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import SAMPLE_CAPTURES, synthetic_capture

from traceaudit.parallel.steps import Audit
from traceaudit.parallel.units import read_unit
from traceaudit.pipeline import ReadOptions
from traceaudit.report.summary_report import _worst_of
from traceaudit.retire.findings import (CountedFindings, FindingChain, FindingsNotKept,
                                        ParkedFindings, rule_severities, worst_candidates)
from traceaudit.rules.config import RulesConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> list[Path]:
    """Three slices of the benchmarks' synthetic capture (every kind of ending; ~1,000
    findings each, many of the same rule and severity at the same moments)."""
    where = tmp_path_factory.mktemp("batch")
    return [synthetic_capture(where / f"slice-{seed}.pcap", connections=3000, seed=seed,
                              duration=18.0) for seed in (1, 2, 3)]


def _findings(path: Path, keep: bool):
    step = Audit(RulesConfig(), keep_excerpts=False, keep_events=False, keep_findings=keep)
    return [d.findings for d in read_unit(path, ReadOptions(), step)]


def test_counts_and_worst_findings_are_those_of_every_finding(synthetic):
    """Per capture and over a batch (lists, parked and counted parts mixed): the counts by
    rule and severity, the total, and the worst findings the summary shows."""
    captures = [*SAMPLE_CAPTURES, *synthetic]
    kept = [f for path in captures for f in _findings(path, keep=True)]
    counted = [f for path in captures for f in _findings(path, keep=False)]
    assert all(isinstance(c, CountedFindings) for c in counted)
    assert sum(len(k) for k in kept) > 3000
    for k, c in zip(kept, counted):
        assert len(c) == len(k)
        assert c.rule_severities == rule_severities(k)
        assert _worst_of(c.worst_candidates()) == _worst_of(k)
    every = [f for k in kept for f in k]
    for parts in (counted, [CountedFindings.of(_parked(k)) for k in kept],
                  [c if i % 2 else k for i, (k, c) in enumerate(zip(kept, counted))]):
        chain = FindingChain(parts)
        assert len(chain) == len(every)
        assert rule_severities(chain) == rule_severities(every)
        assert chain.severities() == Counter(f.severity for f in every)
        assert _worst_of(worst_candidates(chain)) == _worst_of(every)
        if all(isinstance(p, CountedFindings) for p in parts):
            assert len(worst_candidates(chain)) < len(every) // 3


def _parked(findings: list) -> ParkedFindings:
    parked = ParkedFindings(keep=0)
    for i in range(0, len(findings), 700):         # several chunks
        parked.add(findings[i:i + 700])
    return parked


def test_the_findings_themselves_cannot_be_read(synthetic):
    """A report that lists findings must keep them: reading counted ones raises."""
    counted = _findings(synthetic[0], keep=False)[0]
    assert len(counted) > 0
    with pytest.raises(FindingsNotKept):
        list(counted)
    with pytest.raises(FindingsNotKept):
        counted[0]
    with pytest.raises(FindingsNotKept):
        list(FindingChain([counted]))


def test_a_worker_sends_back_kilobytes_not_every_finding(synthetic):
    kept = len(pickle.dumps(_findings(synthetic[0], keep=True)[0]))
    counted = len(pickle.dumps(_findings(synthetic[0], keep=False)[0]))
    assert counted < 40_000 < kept


#: what depends on the run's clock
CLOCK = re.compile(r"analysed in [0-9.]+ s")


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("read", [[], ["--spill"]], ids=["whole", "flat"])
def test_the_summary_is_that_of_a_run_keeping_every_finding(synthetic, tmp_path, jobs, read):
    """``analyze`` with the summary alone and with a report that lists findings (JUnit, so
    that every finding is kept) print the same summary, with one reader and with two, of
    captures read whole and read flat (their findings parked, then counted)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    runs = []
    for extra in ([], ["--junit", str(tmp_path / "junit.xml")]):
        r = subprocess.run([sys.executable, "-m", "traceaudit", "analyze", *map(str, synthetic),
                            str(ROOT / "sample_pcaps"), "--jobs", jobs, *read, *extra],
                           env=env, capture_output=True, text=True, timeout=300)
        runs.append((r.returncode, CLOCK.sub("", r.stdout), r.stderr))
    assert runs[0] == runs[1]
    assert runs[0][0] == 1 and "Worst findings (5 of" in runs[0][1]
