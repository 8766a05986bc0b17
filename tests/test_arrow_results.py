"""What a Dask worker sends back (issue 18, part 5): Arrow tables, made again on the client
exactly as they were (``parallel.arrow_results``), for every sample capture and every step;
and readable by any Arrow reader, columns by name."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from conftest import SAMPLE_CAPTURES

from traceaudit.flows.columns import Coded, Columns, Repeated
from traceaudit.parallel.arrow_results import packed, unpacked
from traceaudit.parallel.steps import Audit, FlowsOnly, RulesOnWhole, ZeekOnly
from traceaudit.parallel.units import read_unit
from traceaudit.pipeline import ReadOptions
from traceaudit.retire import RetireOptions
from traceaudit.retire.findings import CountedFindings
from traceaudit.retire.spill import SpilledTable
from traceaudit.rules.config import RulesConfig


def _same_column(a, b) -> bool:
    if isinstance(a, Coded):
        return isinstance(b, Coded) and a.codes.dtype == b.codes.dtype and \
            np.array_equal(a.codes, b.codes) and a.labels.tolist() == b.labels.tolist()
    if isinstance(a, Repeated):
        return isinstance(b, Repeated) and (a.value, a.n) == (b.value, b.n)
    if a.dtype == object:
        return b.dtype == object and a.tolist() == b.tolist()
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()     # (NaN is NaN, bit for bit)


def _same_table(a: Columns | SpilledTable | None, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, SpilledTable):
        assert isinstance(b, SpilledTable)
        a, b = a.columns(), b.columns()
    return list(a.data) == list(b.data) and len(a) == len(b) and \
        all(_same_column(a.column(k), b.column(k)) for k in a.data)


def _same_array(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes() and \
        b.flags.writeable


def _assert_same(done, back) -> None:
    a, b = done.analysis, back.analysis
    if a.stats.error is None:
        assert b.stats == a.stats
    else:
        assert (type(b.stats.error), str(b.stats.error), b.stats.error.__dict__) == \
            (type(a.stats.error), str(a.stats.error), a.stats.error.__dict__)
    assert _same_table(a.table, b.table)
    assert _same_table(a.zeek_table, b.zeek_table)
    for name in ("events", "rst_origins"):
        assert _same_array(getattr(a, name), getattr(b, name)), name
    for name in ("endpoints", "conns"):
        assert _same_array(getattr(a.tracked, name), getattr(b.tracked, name)), name
    assert (b.tracked.end_ts_ns, b.tracked.config) == (a.tracked.end_ts_ns, a.tracked.config)
    assert (a.excerpts is None) == (b.excerpts is None)
    if a.excerpts is not None:
        for name in ("count", "pool", "pool_start", "base"):
            assert _same_array(getattr(a.excerpts, name), getattr(b.excerpts, name)), name
        assert list(b.excerpts.slots) == list(a.excerpts.slots)
        assert all(_same_array(a.excerpts.slots[k], b.excerpts.slots[k])
                   for k in a.excerpts.slots)
    if isinstance(done.findings, CountedFindings):        # (the summary alone: counts)
        assert isinstance(back.findings, CountedFindings)
        assert (len(back.findings), back.findings.rule_severities) == \
            (len(done.findings), done.findings.rule_severities)
        assert back.findings.worst_candidates() == done.findings.worst_candidates()
        return
    assert list(back.findings) == list(done.findings)
    assert [f.fingerprint for f in back.findings] == [f.fingerprint for f in done.findings]


STEPS = {
    "analyze --html": (Audit(RulesConfig(), keep_excerpts=True), ReadOptions()),
    "analyze": (Audit(RulesConfig(), keep_excerpts=False, keep_events=False), ReadOptions()),
    "analyze, the summary alone": (Audit(RulesConfig(), keep_excerpts=False, keep_events=False,
                                         keep_findings=False), ReadOptions()),
    "python api": (RulesOnWhole(RulesConfig()), ReadOptions()),
    "flows --format csv": (FlowsOnly(), ReadOptions(retire=RetireOptions())),
    "flows --format zeek": (ZeekOnly(), ReadOptions()),
}


@pytest.mark.parametrize("command", list(STEPS))
def test_every_sample_comes_back_as_it_was(command):
    step, options = STEPS[command]
    for path in SAMPLE_CAPTURES:
        for done in read_unit(path, options, step):
            if isinstance(done.analysis.table, SpilledTable):
                # (packing reads the spill, and the comparison reads it too: a second read)
                expected = done.analysis.table.columns()
                back = unpacked(packed(done))
                assert _same_table(expected, back.analysis.table.columns()), path.name
                continue
            _assert_same(done, unpacked(packed(done)))


def test_failed_captures_come_back_with_their_errors(tmp_path):
    damaged = tmp_path / "cut.pcap"
    data = (SAMPLE_CAPTURES[0]).read_bytes()
    damaged.write_bytes(data[:len(data) - 7])
    not_capture = tmp_path / "notes.pcap"
    not_capture.write_text("not a capture\n")
    step = Audit(RulesConfig(), keep_excerpts=False)
    for path in (damaged, not_capture, tmp_path / "missing.pcap"):
        done = read_unit(path, ReadOptions(), step)
        assert done and all(d.analysis.failed for d in done)
        for d in done:
            _assert_same(d, unpacked(packed(d)))


def test_a_plain_arrow_reader_opens_every_table():
    """The payload is Arrow IPC streams: the flow table's states, the findings' codes and
    frames, the endpoint facts by field name, read without traceaudit."""
    path = next(p for p in SAMPLE_CAPTURES if p.name == "close-wait-leak-rst.pcap")
    done, = read_unit(path, ReadOptions(), RulesOnWhole(RulesConfig()))
    payload = packed(done)
    tables = {name: pa.ipc.open_stream(data).read_all()
              for name, data in payload.items() if name != "meta"}
    flows = tables["flows"]
    assert flows.column("server_state").to_pylist() == \
        done.analysis.table["server_state"].tolist()
    assert flows.column("client_port").to_pylist() == \
        done.analysis.table["client_port"].tolist()
    findings = tables["findings"]
    assert findings.column("code").to_pylist() == [f.code for f in done.findings]
    assert findings.column("frames").to_pylist() == [f.frames for f in done.findings]
    facts = tables["endpoint_facts"]
    ends = done.analysis.tracked.endpoints
    assert facts.column("state.server").to_pylist() == ends["state"][:, 1].tolist()
    assert tables["events"].column("frame").to_pylist() == done.analysis.events[:, 3].tolist()
    # compressed: the large sample's payload is smaller than its arrays
    big, = read_unit(next(p for p in SAMPLE_CAPTURES if p.name == "time-wait-pileup.pcap"),
                     ReadOptions(), RulesOnWhole(RulesConfig()))
    arrays = big.analysis.events.nbytes + big.analysis.tracked.endpoints.nbytes
    assert sum(map(len, packed(big).values())) < arrays / 2



def test_a_cluster_worker_reads_flat_and_sends_its_json_part(tmp_path):
    """``analyze --json --spill`` on a cluster: the worker reads with flat memory, renders its
    capture's part of the JSON report in a directory of its own, and sends the summary's
    columns and that text; the client puts the text in its own directory. The report made
    of it is the one a local read renders."""
    from traceaudit.audit import SUMMARY_COLUMNS
    from traceaudit.parallel.arrow_results import read_unit_as_arrow
    from traceaudit.parallel.cluster import cluster_step
    from traceaudit.parallel.runner import remote_options
    from traceaudit.report.json_report import connection_text, finding_text
    sample = next(p for p in SAMPLE_CAPTURES if p.name == "time-wait-pileup.pcap")
    options = ReadOptions(retire=RetireOptions(facts=True))
    step = cluster_step(Audit(RulesConfig(), keep_excerpts=False, keep_events=True,
                              json_dir=str(tmp_path / "client")))
    (tmp_path / "client").mkdir()
    assert remote_options(options, step).retire == options.retire        # (read flat)
    (payload,) = read_unit_as_arrow(sample, remote_options(options, step), step)
    flows = pa.ipc.open_stream(payload["flows"]).read_all()
    assert flows.column_names == list(SUMMARY_COLUMNS) and flows.num_rows == 2000
    back = unpacked(payload, str(tmp_path / "client"))
    assert back.analysis.json_text.rows_path.startswith(str(tmp_path / "client"))
    (whole,) = read_unit(sample, ReadOptions(), RulesOnWhole(RulesConfig()))
    assert b"".join(back.analysis.json_text.rows()) == b"".join(connection_text(whole.analysis))
    assert b"".join(back.analysis.json_text.finding_blocks()) == \
        b"".join(finding_text(f.to_dict() for f in whole.findings))
    assert back.analysis.json_text.finding_count == len(whole.findings) == len(back.findings)
    assert list(back.findings) == list(whole.findings)
    assert not list((tmp_path / "client").iterdir())      # (the files go once read)
