"""One capture split by flow hash with the rules run in the shares (``parallel.share_rules``):
``analyze`` without a JSON or HTML report gives what one read gives: the same findings in
the same order, the same summary columns, the same statistics."""

from __future__ import annotations

import pytest
from conftest import CORPUS_TRACES, SAMPLE_CAPTURES, SAMPLES, needs_corpus, synthetic_capture

from traceaudit.audit import SUMMARY_COLUMNS
from traceaudit.parallel import share_rules
from traceaudit.parallel.runner import SPLIT_ENV, in_process, read_units
from traceaudit.parallel.steps import Audit
from traceaudit.pipeline import ReadOptions
from traceaudit.report.summary_report import _worst_of
from traceaudit.retire.findings import CountedFindings
from traceaudit.rules.config import RulesConfig

OPTIONS = ReadOptions(read_ahead=False)


def _step(keep_findings: bool = True) -> Audit:
    return Audit(RulesConfig(), keep_excerpts=False, keep_events=False,
                 keep_findings=keep_findings)


def _split(path, jobs: int, step: Audit, monkeypatch):
    monkeypatch.setenv(SPLIT_ENV, "1")
    done = list(read_units([path], OPTIONS, step, jobs=jobs))
    assert len(done) == 1
    return done[0]


def _column_list(table, name):
    column = table.column(name)
    return column.values().tolist() if hasattr(column, "values") else list(column)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A slice of the benchmarks' synthetic capture (every kind of ending, ~1,400 findings)."""
    return synthetic_capture(tmp_path_factory.mktemp("synthetic") / "slice.pcap",
                             connections=4000, seed=3, duration=24.0)


@pytest.mark.parametrize("jobs", [2, 3])
def test_every_sample_as_one_read(jobs, synthetic, monkeypatch):
    judged = 0
    for path in [*SAMPLE_CAPTURES, synthetic]:
        one = list(in_process([path], OPTIONS, _step()))[0]
        split = _split(path, jobs, _step(), monkeypatch)
        assert split.analysis.stats == one.analysis.stats, path.name
        assert split.findings == one.findings, path.name
        for name in SUMMARY_COLUMNS:
            assert _column_list(split.analysis.table, name) == \
                _column_list(one.analysis.table, name), (path.name, name)
        judged += len(one.findings)
    assert judged > 1000


@needs_corpus
def test_every_zeek_trace_as_one_read(monkeypatch):
    for path in CORPUS_TRACES:
        one = list(in_process([path], OPTIONS, _step()))[0]
        split = _split(path, 2, _step(), monkeypatch)
        assert (split.analysis.stats.error is None) == (one.analysis.stats.error is None)
        assert split.findings == one.findings, path.name
        assert _column_list(split.analysis.table, "close_kind") == \
            _column_list(one.analysis.table, "close_kind"), path.name


def test_counted_findings_of_the_shares(monkeypatch):
    """The summary alone: every share's counts and worst few, combined."""
    path = SAMPLES / "time-wait-pileup.pcap"
    one = list(in_process([path], OPTIONS, _step()))[0].findings
    split = _split(path, 2, _step(keep_findings=False), monkeypatch).findings
    assert isinstance(split, CountedFindings)
    assert len(split) == len(one) > 0
    assert _worst_of(split.worst_candidates()) == _worst_of(one)


def test_a_damaged_capture_is_merged_and_judged_as_one_read(tmp_path, monkeypatch):
    data = (SAMPLES / "time-wait-pileup.pcap").read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:len(data) * 2 // 3] + b"\xff" * 40)
    one = list(in_process([path], OPTIONS, _step()))[0]
    split = _split(path, 2, _step(), monkeypatch)
    assert one.analysis.stats.error is not None
    assert str(split.analysis.stats.error) == str(one.analysis.stats.error)
    assert split.findings == one.findings and len(one.findings)


def test_the_rules_run_in_the_shares(monkeypatch):
    """The route is taken (not the merge, then the rules): the shares' findings are made in
    each share, this process's included."""
    made = []
    real = share_rules.share_findings

    def counting(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(share_rules, "share_findings", counting)
    path = SAMPLES / "time-wait-pileup.pcap"
    split = _split(path, 2, _step(), monkeypatch)
    assert made == [1] and len(split.findings) > 0       # (the worker's call is its own)


def test_rules_without_summaries_are_judged_on_the_merged_capture(monkeypatch):
    """A rule that does not say what it reads of other connections (no ``TOTALS``) makes the
    rules run on the merged analysis: no share judges, and the findings are one read's."""
    import sys
    config = RulesConfig()
    module = sys.modules[config.active_rules()[0].check.__module__]
    monkeypatch.delattr(module, "TOTALS")
    assert not share_rules.applies(config)
    made = []
    monkeypatch.setattr(share_rules, "share_findings", lambda *a, **k: made.append(1))
    path = SAMPLES / "time-wait-pileup.pcap"
    one = list(in_process([path], OPTIONS, _step()))[0]
    split = _split(path, 2, _step(), monkeypatch)
    assert made == [] and split.findings == one.findings and len(one.findings)
