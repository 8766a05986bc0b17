"""The JSON report's column-wise text writer against the plain dict document, and streaming
writes through ``write_output``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from traceaudit.capture import expand_paths
from traceaudit.pipeline import analyze_capture
from traceaudit.report import json_report
from traceaudit.report.output import write_output
from traceaudit.tracking.tracker import EV_STATE, EV_TS

NS = 1_000_000_000

ROOT = Path(__file__).resolve().parents[1]


def dict_document(analyses, findings=None, *, tool_version, generated_at=None) -> bytes:
    """The report as orjson writes the document of dicts (the reference the writer matches)."""
    doc = {
        "format": json_report.FORMAT_VERSION,
        "tool": {"name": "traceaudit", "version": tool_version},
        "generated_at": generated_at,
        "captures": [json_report.capture_entry(a) for a in analyses],
        "connections": [c for a in analyses for c in json_report.connection_entries(a)],
        "findings": findings or [],
    }
    return orjson.dumps(doc) + b"\n"


@pytest.fixture(scope="module")
def analyses():
    files = expand_paths([ROOT / "sample_pcaps"])
    assert files
    return [analyze_capture(f) for f in files]


def test_render_matches_the_dict_document(analyses, monkeypatch):
    findings = [{"rule": "x", "n": i, "why": "a,b \"quoted\" é"} for i in range(7)]
    monkeypatch.setattr(json_report, "CHUNK_CONNECTIONS", 3)      # many chunk seams
    monkeypatch.setattr(json_report, "CHUNK_FINDINGS", 2)
    got = json_report.render(analyses, iter(findings), tool_version="t", generated_at="now")
    assert got == dict_document(analyses, findings, tool_version="t", generated_at="now")
    assert len(orjson.loads(got)["connections"]) == sum(len(a.flows) for a in analyses)


def test_render_odd_values(analyses):
    """Odd paths, times far from now, strings with commas and quotes, negative and extreme
    integers."""
    a = next(x for x in analyses if len(x.flows) and len(x.events))
    stats = dataclasses.replace(a.stats, path='we"ird, 100%s/é.pcap')
    flows = a.flows.copy()
    flows.loc[0, "history"] = 'a,"b"'
    if "conn_state" in flows.columns:
        flows["conn_state"] = flows["conn_state"].astype("str")
        flows.loc[len(flows) - 1, "conn_state"] = None              # a missing string
    # an object column holding values that hash alike but are written differently
    flows["close_kind"] = pd.Series([1, True, None, "x"] * len(flows), dtype=object)[:len(flows)]
    flows.loc[0, "start_ts"] = 1e-7
    flows.loc[0, "client_bytes"] = -7                          # integers the kernel writes
    flows.loc[len(flows) - 1, "server_bytes"] = 2**63 - 1
    flows.loc[0, "client_payload"] = -2**63
    flows["ip_version"] = flows["ip_version"].astype(np.uint64)  # written by orjson instead
    flows.loc[len(flows) - 1, "end_ts"] = 1e17
    events = a.events.copy()
    events[0, EV_TS] = 5                       # 5e-09 seconds
    events[-1, EV_TS] = 3 * 10**17             # 3e+08 s: positional
    events[1, EV_STATE] = -1                   # UNSEEN (a negative state code)
    odd = dataclasses.replace(a, stats=stats, table=flows, events=events)
    for group in ([odd], [odd, a]):
        assert json_report.render(group, tool_version="t") == \
            dict_document(group, tool_version="t")


def test_render_without_connections(analyses):
    a = analyses[0]
    empty = dataclasses.replace(a, table=a.flows.iloc[:0], events=a.events[:0])
    assert json_report.render([empty], tool_version="t") == dict_document([empty],
                                                                          tool_version="t")
    assert json_report.render([], tool_version="t") == dict_document([], tool_version="t")


def test_timeline_times_are_exact_decimal_seconds():
    """The kernel's and Python's decimal seconds agree; a JSON reader gets the double nearest
    the capture's time; for microsecond times the text is what repr writes of that double."""
    rng = np.random.default_rng(7)
    us = (1_700_000_000 + rng.integers(0, 10**8, 20000)) * NS + rng.integers(0, 10**6, 20000) * 1000
    odd = np.array([0, 1, 5, 10**9, 10**9 - 1, -1, -1_500_000_000, 123_456_789,
                    3 * 10**17, 2**62, 1_700_000_000_123_456_789, -2**63, 2**63 - 1], np.int64)
    for ns in (us, odd, rng.integers(-10**18, 10**18, 20000)):
        texts = [json_report.decimal_seconds(int(t)) for t in ns.tolist()]
        assert _kernel_texts(ns) == texts
        assert [float(t) for t in texts] == [int(t) / NS for t in ns.tolist()]
    assert [json_report.decimal_seconds(int(t)) for t in us.tolist()] == \
        [repr(int(t) / NS) for t in us.tolist()]
    assert json_report.decimal_seconds(1_700_000_000_123_456_789) == "1700000000.123456789"
    assert json_report.decimal_seconds(0) == "0.0"
    assert json_report.decimal_seconds(-1_500_000_000) == "-1.5"


def _kernel_texts(ns: np.ndarray) -> list[str]:
    """Each time as the row writer's kernel writes it (one-event timelines)."""
    from traceaudit.report.json_text import TIMELINE, RowWriter, TextTable
    n = len(ns)
    tail = TextTable()
    tail.add_texts([b"}"])
    writer = RowWriter([TIMELINE], [b""], np.zeros((1, n), np.int64), tail, b"",
                       np.repeat(np.arange(n + 1), 2)[1:],
                       ns.astype(np.int64), np.full(n, -1, np.int64), np.zeros(n, np.int64))
    text = bytes(writer.chunk(0, n)).decode()
    return [t.split(",")[0] for t in text.split('{"ts":')[1:]]


def test_row_writer_buffer_holds_the_longest_values():
    """The kernel writes without bounds checks into a buffer sized from the longest row and
    event: with every number at its longest (smallest int64, the most negative time, the
    largest frame) and texts short (so they do not pad the bound), what it writes still fits
    and reads back as those values."""
    from traceaudit.report.json_text import INT, TEXT, TIMELINE, RowWriter, TextTable
    table = TextTable()
    text = table.add_texts([b'"x"'])
    tail = table.add_texts([b"}"])
    n, low = 3, np.iinfo(np.int64).min
    values = np.array([[low] * n, [text] * n, [0] * n], np.int64)
    events = 4                                         # per row, on the client's timeline
    ev_first = np.repeat(np.arange(n + 1) * events, 2)[1:]   # (servers' timelines empty)
    writer = RowWriter([INT, TEXT, TIMELINE], [b'{"i":', b',"t":', b',"tl":'], values, table,
                       b"}", ev_first, np.full(n * events, low, np.int64),
                       np.full(n * events, np.iinfo(np.int64).max, np.int64),
                       np.full(n * events, tail, np.int64))
    # (text cut at the buffer's end would not parse)
    rows = orjson.loads(b"[" + bytes(writer.chunk(0, n)) + b"]")
    assert [r["i"] for r in rows] == [int(low)] * n and rows[0]["t"] == "x"
    assert len(rows[0]["tl"]) == events and rows[0]["tl"][0]["frame"] == 2**63 - 1
    assert rows[-1]["tl"][-1]["ts"] == float(json_report.decimal_seconds(int(low)))


def test_write_streams_to_a_file(analyses, tmp_path):
    out = tmp_path / "sub" / "report.json"
    json_report.write(out, analyses, tool_version="t")
    assert out.read_bytes() == dict_document(analyses, tool_version="t")
    assert not [p for p in out.parent.iterdir() if p.name != "report.json"]


def test_streaming_failure_leaves_no_file(tmp_path):
    out = tmp_path / "report.json"

    def pieces():
        yield b"{"
        raise RuntimeError("renderer broke")

    with pytest.raises(RuntimeError):
        write_output(out, pieces())
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        write_output(out, pieces())
    assert out.read_bytes() == b"old"                 # the old report is left in place
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_streaming_to_stdout(capsysbinary):
    write_output("-", iter([b"a", b"bc", b"\n"]))
    assert capsysbinary.readouterr().out == b"abc\n"


def test_analyze_json_without_pandas(tmp_path):
    """The column table is all that rules, the terminal summary and the JSON and JUnit reports
    read: `analyze --json` never pays pandas' import (~0.3 s of one core). (Only a TIME_WAIT
    pile-up, once found, is described with pandas' group-bys.)"""
    import subprocess
    import sys
    out = tmp_path / "r.json"
    captures = [str(p) for p in sorted((ROOT / "sample_pcaps").glob("*.pcap*"))
                if "pileup" not in p.name]
    assert len(captures) > 10
    code = ("import sys\nfrom traceaudit.cli import main\n"
            f"sys.argv = ['traceaudit', 'analyze', *{captures!r}, "
            f"'--json', {str(out)!r}, '--junit', {str(tmp_path / 'j.xml')!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('pandas' in sys.modules, code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, check=True)
    assert done.stdout.split()[-2:] == ["False", "1"], done.stdout + done.stderr
    report = orjson.loads(out.read_bytes())
    assert report["findings"] and report["connections"]
