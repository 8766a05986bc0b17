"""``traceaudit analyze``'s flat read (``traceaudit/retire/flat.py``): connections retire to a
spill with their facts and timelines, the rules and the JSON report read them back a chunk at
a time. Its JSON, JUnit and SARIF reports must be those of a read that keeps every connection,
byte for byte."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

import pcapgen as g
from conftest import CORPUS_TRACES, SAMPLE_CAPTURES, SAMPLES, cli_run, synthetic_capture
from pcapgen import ACK, RST, SYN
from test_retire import CASES, FAST, late_capture
from traceaudit import cli
from traceaudit.audit import build_report, slimmed
from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.report import json_report
from traceaudit.report.junit import render_junit
from traceaudit.report.sarif import render_sarif
from traceaudit.retire import RetireOptions, flat, spill
from traceaudit.rules import run_rules
from traceaudit.rules.config import make_config

#: retire as eagerly as ``test_retire.EAGER`` (its tiny Bloom filter forces repairs), with the
#: facts and timelines the rules read
EAGER = RetireOptions(grace_s=0.0, sweep_conns=0, bloom_bits=64, facts=True)


def reports(paths, retire, batch_rows=1 << 16, **options) -> tuple[bytes, str, str]:
    """(JSON, JUnit, SARIF) of ``paths`` as ``traceaudit analyze`` makes them."""
    config = make_config(None)
    analyses, findings = [], []
    for path in paths:
        a = analyze_capture(path, ReadOptions(batch_rows=batch_rows, excerpts=False,
                                              frames_soon=False, retire=retire, **options))
        findings += run_rules(a, config)
        analyses.append(slimmed(a, keep_excerpts=False))
    report = build_report(analyses, config, None, findings=findings, tool_version="t",
                          generated_at="t")
    text = b"".join(bytes(piece) for piece in json_report.render_chunks(
        report.analyses, (f.to_dict() for f in report.findings), tool_version="t",
        generated_at="t"))
    return text, render_junit(report), render_sarif(report)


def differing(paths, **options) -> list[str]:
    return [f"{Path(p).name}: {kind}" for p in paths
            for kind, flat, kept in zip(("json", "junit", "sarif"),
                                        reports([p], EAGER, batch_rows=64, **options),
                                        reports([p], None, **options))
            if flat != kept]


@pytest.fixture(autouse=True)
def on_disk(monkeypatch):
    """The reports read the spill a chunk at a time, however small the capture (a small
    spill is otherwise brought back into memory once the rules ran)."""
    monkeypatch.setattr(flat, "IN_MEMORY_BYTES", -1)


@pytest.mark.parametrize("options, corpus, retired, repaired, in_memory",
                         [(FAST, True, 1000, 50, False), (FAST, False, 300, 50, True)],
                         ids=["spilled", "small-spills-in-memory"])
def test_flat_reports_equal_the_keeping_read_on_every_capture(options, corpus, retired,
                                                               repaired, in_memory, counted,
                                                               monkeypatch):
    """Every sample capture and Zeek corpus trace (the corpus where ../shared is present),
    with retirement after every 64 packets and chunks of 16 frames (short timers: most
    connections of these short traces are over then, so they retire). The reports read the
    spill, or (``in_memory``, the samples again) the table it is brought back to. (Default
    timers: ``test_synthetic_slice_through_the_cli``.)"""
    monkeypatch.setattr(spill, "BUCKET_FRAMES", 16)
    if in_memory:
        monkeypatch.setattr(flat, "IN_MEMORY_BYTES", 1 << 30)
    paths = SAMPLE_CAPTURES + (CORPUS_TRACES if corpus else [])
    assert SAMPLE_CAPTURES
    assert differing(paths, **options) == []
    print(f"{len(paths)} captures, {counted['retired']} rows retired, "
          f"{counted['repaired']} 4-tuples re-read")
    assert counted["retired"] > retired and counted["repaired"] > repaired


@pytest.mark.parametrize("case", CASES)
def test_a_returning_4_tuple(tmp_path, case, counted):
    """A 4-tuple back after its connection retired (repaired by a second read, or a new
    incarnation)."""
    path = late_capture(tmp_path, CASES[case][0])
    assert differing([path], tracker=FAST["tracker"]) == []
    assert counted["retired"] >= 1


def test_time_wait_reuse_after_the_previous_connection_retired(tmp_path, monkeypatch):
    """A new SYN recycles its 4-tuple's TIME_WAIT; the recycled connection retires before its
    successor does (the tracker forgets which row it was): time-wait-reuse must still name it,
    from another chunk."""
    monkeypatch.setattr(spill, "BUCKET_FRAMES", 8)
    old = g.Conversation().handshake().send("c", ACK | 0x08, b"hi")
    old.close_by("c")                          # the client holds the 4-tuple in TIME_WAIT
    old.gap_ns = 10**9
    old.send("c", SYN, seq=555_555).send("s", SYN | ACK, seq=9, ack=555_556)
    old.send("c", ACK, seq=555_556, ack=10)
    others = [g.Conversation(cport=41000 + k, t0_ns=old.t + (k + 1) * 10**8).handshake()
              for k in range(6)]
    frames = sorted(old.frames + [f for c in others for f in c.frames], key=lambda f: f.ts_ns)
    path = tmp_path / "reuse.pcap"
    path.write_bytes(g.pcap_bytes(frames))
    flat = reports([str(path)], EAGER, batch_rows=2)
    assert flat == reports([str(path)], None)
    assert b'"code":"TA110"' in flat[0]


def test_a_late_reset_after_retirement_changes_the_findings(tmp_path):
    """A connection that retired looking closed with FIN, then an RST on its 4-tuple: the
    repaired row and its findings are those of the keeping read."""
    path = late_capture(tmp_path, lambda c: c.send("s", RST | ACK))
    flat = reports([path], EAGER, batch_rows=2)
    assert flat == reports([path], None)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A slice of the benchmarks' synthetic capture: every kind of ending, 4,000 connections
    at its concurrency (~170 starting a second)."""
    return synthetic_capture(tmp_path_factory.mktemp("synthetic") / "slice.pcap",
                             connections=4000, seed=3, duration=24.0)


def test_synthetic_slice_through_the_cli(synthetic, tmp_path, monkeypatch, counted):
    """``analyze --json --junit --sarif --html`` (the flat read, retiring after every batch)
    against the same command with --no-spill (which keeps every connection): the reports, the
    HTML page and the terminal summary (the findings read back from their packed form)."""
    monkeypatch.setattr(cli, "FLAT_READ", RetireOptions(grace_s=1.0, sweep_conns=0,
                                                        facts=True))
    monkeypatch.setattr(spill, "BUCKET_FRAMES", 1 << 12)
    monkeypatch.setattr(cli, "ReadOptions", functools.partial(ReadOptions, batch_rows=4096))
    outputs = {}
    for mode, extra in (("flat", []), ("kept", ["--no-spill"])):
        names = [tmp_path / f"{mode}.{ext}" for ext in ("json", "xml", "sarif", "html")]
        result = cli_run("analyze", synthetic, "--json", names[0], "--junit", names[1],
                         "--sarif", names[2], "--html", names[3], *extra)
        assert result.exit_code == 1, result.output
        summary = re.sub(r"analysed in [0-9.]+ s", "", result.output).encode()
        outputs[mode] = [_masked(n.read_bytes()) for n in names] + [summary]
        if mode == "flat":
            assert counted["retired"] > 300
    assert outputs["flat"] == outputs["kept"]
    codes = set(re.findall(rb'"code":"(TA\d+)"', outputs["flat"][0]))
    assert {b"TA101", b"TA104", b"TA107", b"TA112"} <= codes


def _masked(text: bytes) -> bytes:
    """Without the run's times (when, how long)."""
    text = re.sub(rb'"generated_at":"[^"]*"', b'"generated_at":""', text)
    text = re.sub(rb"generated [0-9TZ:-]+ &middot; analysis took [0-9.]+ s", b"", text)
    text = re.sub(rb'(timestamp|time)="[^"]*"', rb'\1=""', text)
    text = re.sub(rb'"elapsedSeconds": ?[0-9.e-]+', b'"elapsedSeconds":0', text)
    return re.sub(rb'"(endTimeUtc|startTimeUtc)": ?"[^"]*"', rb'"\1":""', text)


def test_every_rule_says_what_it_reads_of_other_connections():
    """A flat read runs a rule a chunk at a time only if its module declares ``TOTALS`` (the
    whole-capture summaries it reads; ``{}``: none). A rule without it makes the flat read
    run every rule on the whole capture at once (right, but not flat): declare it."""
    import sys

    from traceaudit.rules import registry
    missing = [r.name for r in registry().values()
               if not hasattr(sys.modules[r.check.__module__], "TOTALS")]
    assert missing == []


def test_a_rule_without_totals_runs_on_the_whole_capture(monkeypatch, tmp_path):
    """Such a rule (here: time-wait-pileup, its declaration taken away) still finds what the
    keeping read finds."""
    from traceaudit.rules import time_wait_pileup
    monkeypatch.setattr(spill, "BUCKET_FRAMES", 16)
    monkeypatch.delattr(time_wait_pileup, "TOTALS")
    path = next(p for p in SAMPLE_CAPTURES if p.name == "time-wait-pileup.pcap")
    flat_reports = reports([path], EAGER, batch_rows=64)
    assert flat_reports == reports([path], None)
    assert b'"code":"TA111"' in flat_reports[0]


def test_spill_policy_by_size_and_options(tmp_path):
    """The flat read costs ~1/3 more CPU, so ``analyze`` uses it by default only from
    ``cli.FLAT_MIN_BYTES`` of capture (``cli.FLAT_HTML_MIN_BYTES`` with --html, whose whole
    read keeps more; ``--spill``: always; ``--no-spill``: never), and the pipeline keeps a
    capture below ``min_bytes`` whole."""
    cap = SAMPLE_CAPTURES[0]
    size = cap.stat().st_size
    assert cli._flat_read(None).min_bytes == cli.FLAT_MIN_BYTES >= 64 << 20
    assert cli._flat_read(None, html=True).min_bytes == cli.FLAT_HTML_MIN_BYTES \
        < cli.FLAT_MIN_BYTES
    assert cli._flat_read(True).min_bytes == 0 and cli._flat_read(True).facts
    assert cli._flat_read(False) is False
    opts = dict(excerpts=False, frames_soon=False)
    for least, spilled in ((size + 1, False), (size, True)):
        a = analyze_capture(cap, ReadOptions(retire=RetireOptions(facts=True, min_bytes=least),
                                             **opts))
        assert flat.is_flat(a) is spilled
    outs = {}
    for flag in ("--spill", "--no-spill"):
        out = tmp_path / f"{flag}.json"
        cli_run("analyze", str(cap.parent), "--json", out, "--jobs", "1", flag, "--exit-zero")
        outs[flag] = re.sub(rb'"generated_at":"[^"]*"', b"", out.read_bytes())
    assert outs["--spill"] == outs["--no-spill"]


def test_a_full_disk_while_spilling_is_said_plainly(monkeypatch):
    """The spill's temporary file on a full disk (/dev/full: every write fails with ENOSPC)
    fails that capture with an error saying so and what to do, not as an internal error."""
    import tempfile

    from traceaudit.errors import CaptureBug
    from traceaudit.pipeline import ReadOptions, analyze_captures
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **kw: open("/dev/full", "w+b"))
    (analysis,) = analyze_captures([SAMPLES / "time-wait-pileup.pcap"],
                                   ReadOptions(retire=EAGER))
    error = analysis.stats.error
    assert error is not None and not isinstance(error, CaptureBug)
    assert error.slug == "no-space" and "time-wait-pileup.pcap" in str(error)
    assert "TMPDIR" in str(error) and "--no-spill" in str(error)


def test_states_of_a_flat_read_equal_the_keeping_read(monkeypatch, counted):
    """``traceaudit states``' table of a flat read (a chunk at a time, read twice: widths,
    census and expired TIME_WAITs first) is the keeping read's, at moments before, during
    and after each sample capture, with CLOSED endpoints shown or not."""
    from traceaudit.report import states_report
    monkeypatch.setattr(spill, "BUCKET_FRAMES", 16)
    for path in SAMPLE_CAPTURES:
        on_disk = analyze_capture(path, ReadOptions(batch_rows=64, retire=EAGER, **FAST))
        whole = analyze_capture(path, ReadOptions(**FAST))
        assert flat.is_flat(on_disk)
        first, last = whole.stats.first_ts_ns, whole.stats.last_ts_ns
        for ts in (first - 10**9, first, (first + last) // 2, last, last + 30 * 10**9,
                   last + 300 * 10**9):
            for show_all in (False, True):
                assert states_report.render(on_disk, ts, show_all) == states_report.render(
                    whole, ts, show_all), (path.name, ts - first, show_all)
    assert counted["retired"] > 300
