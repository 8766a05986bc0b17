"""Hostile files cannot take the run down (issue 20): each class of input that ended a batch
with a traceback and exit 1, crafted, and what happens now.

- pcapng interface blocks whose options run past the block; interfaces nobody uses with a
  link type the reader does not decode; a bad interface in a second section;
- a FIFO, /dev/stdin fed by a pipe, gzip through a pipe (the reader cannot seek back);
- file names that are not UTF-8 or hold control characters;
- an unexpected exception (a bug) while one capture of several is analysed or a report is
  written: reported against it, the others analysed, exit 2 (never 1, which means findings).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading

import pytest

import pcapgen as g
from conftest import ROOT, needs_tshark
from conftest import cli_run as run
from conftest import flows_json as flows
from traceaudit.names import display_name, one_line


def conversation() -> list[g.Frame]:
    conv = g.Conversation()
    conv.handshake().send("c", g.ACK | g.PSH, b"hi").close_by("c")
    return conv.frames


FRAMES = conversation()
GOOD = g.pcap_bytes(FRAMES)
SHB = g._block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(link: int = 1, options: bytes = b"") -> bytes:
    return g._block("<", 1, struct.pack("<HHI", link, 0, 0) + options)


def epbs(frames: list[g.Frame], interface: int = 0) -> bytes:
    """The enhanced packet blocks of ``frames`` on ``interface`` (no header blocks)."""
    data = g.pcapng_section([g.Frame(f.ts_ns, f.data) for f in frames])
    pos, out = 0, []
    while pos < len(data):
        btype, blen = struct.unpack("<II", data[pos:pos + 8])
        if btype == 6:
            block = data[pos:pos + blen]
            out.append(block[:8] + struct.pack("<I", interface) + block[12:])
        pos += blen
    return b"".join(out)


# -- pcapng interface blocks -------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    struct.pack("<HH", 2, 0) + struct.pack("<HH", 14, 8),       # if_tsoffset: 8 bytes, none left
    struct.pack("<HH", 9, 200) + b"\x06\0\0\0",                 # if_tsresol claims 200 bytes
])
def test_interface_option_past_its_block_is_a_corrupt_block(tmp_path, options):
    """Was a struct.error traceback (or an offset read from the trailing length)."""
    p = tmp_path / "opt.pcapng"
    p.write_bytes(SHB + idb(options=options) + epbs(FRAMES))
    result, rows = flows(tmp_path, p)
    assert result.exit_code == 2
    assert f"{p} at byte offset {len(SHB)}: corrupt pcapng interface block: option " \
        in result.stderr and "runs past the end of the block" in result.stderr
    assert rows == []


def test_option_past_its_block_in_a_second_section_keeps_the_first(tmp_path):
    first = g.pcapng_section(FRAMES)
    p = tmp_path / "opt2.pcapng"
    p.write_bytes(first + SHB + idb(options=struct.pack("<HH", 14, 8)) + epbs(FRAMES))
    result, rows = flows(tmp_path, p)
    assert result.exit_code == 2
    assert f"at byte offset {len(first) + len(SHB)}: corrupt pcapng interface block" \
        in result.stderr and "kept 7 packet(s)" in result.stderr
    assert [r["client_packets"] + r["server_packets"] for r in rows] == [7]


@pytest.mark.parametrize("unused_first", [False, True])
def test_unused_interface_with_an_undecoded_link_type_is_harmless(tmp_path, unused_first):
    p = tmp_path / "unused.pcapng"
    ifaces = [idb(0xFFFF), idb(1)] if unused_first else [idb(1), idb(0xFFFF)]
    p.write_bytes(SHB + b"".join(ifaces) + epbs(FRAMES, interface=1 if unused_first else 0))
    result, rows = flows(tmp_path, p)
    assert result.exit_code == 0, result.stderr
    assert [r["client_packets"] + r["server_packets"] for r in rows] == [7]


def test_bad_interface_in_a_second_section_keeps_the_packets_before_it(tmp_path):
    first = g.pcapng_section(FRAMES)
    resol_2_pow_64 = struct.pack("<HH", 9, 1) + bytes([0x80 | 64]) + b"\0\0\0"
    p = tmp_path / "second.pcapng"
    p.write_bytes(first + SHB + idb(options=resol_2_pow_64) + epbs(FRAMES))
    result, rows = flows(tmp_path, p)
    assert result.exit_code == 2
    assert f"at byte offset {len(first) + len(SHB)}: corrupt pcapng interface block: time " \
        "resolution 2^-64 s" in result.stderr and "kept 7 packet(s)" in result.stderr
    assert [r["client_packets"] + r["server_packets"] for r in rows] == [7]


MANY = [f for i in range(40) for f in g.Conversation(
    cport=30000 + i, t0_ns=1_700_000_000_000_000_000 + i * 10**9).handshake().close_by("c").frames]


def test_truncated_gzip_keeps_the_packets_before_the_damage(tmp_path):
    """A buffered read of a whole chunk used to drop what it had decompressed before the
    damage: a cut gzip file lost every packet."""
    data = g.gzipped(g.pcap_bytes(MANY))
    p = tmp_path / "cut.pcap.gz"
    p.write_bytes(data[:len(data) * 3 // 4])
    result, rows = flows(tmp_path, p)
    assert result.exit_code == 2 and "cannot read (Compressed file ended" in result.stderr
    assert len(rows) > 10 and f"kept {sum(r['client_packets'] + r['server_packets'] for r in rows)}" \
        " packet(s)" in result.stderr


# -- pipes -------------------------------------------------------------------------------------
def _cli(args, cwd, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "traceaudit", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, timeout=300, **kw)


def _scrubbed(doc: dict) -> dict:
    doc.pop("generated_at", None)
    for c in doc["captures"]:
        c["path"] = "-"
    for c in doc["connections"] + doc["findings"]:
        c["capture"] = "-"
    for f in doc["findings"]:
        f.pop("fingerprint")            # made from the capture's name
    return doc


def test_stdin_through_a_pipe_reads_as_the_file(tmp_path):
    """`cat x.pcap | traceaudit analyze -` (or /dev/stdin): was io.UnsupportedOperation."""
    p = tmp_path / "x.pcap"
    for name, data in (("pcap", GOOD), ("gzip", g.gzipped(GOOD))):
        p.write_bytes(data)
        filed = _cli(["analyze", p, "--json", "file.json"], tmp_path)
        for source in ("/dev/stdin", "-"):
            piped = _cli(["analyze", source, "--json", "piped.json"], tmp_path, input=data)
            assert b"Traceback" not in piped.stderr, piped.stderr.decode()
            assert piped.returncode == filed.returncode == 0, (name, piped.stderr)
            docs = [json.loads((tmp_path / f).read_text()) for f in ("piped.json", "file.json")]
            assert docs[0]["captures"][0]["path"] == "/dev/stdin"
            assert _scrubbed(docs[0]) == _scrubbed(docs[1]), (name, source)
        rows = [_cli(["flows", src, "--format", "csv"], tmp_path, input=data).stdout
                for src in ("-", p)]
        assert rows[0].count(b"\n") > 1
        assert rows[0].replace(b'"/dev/stdin"', f'"{p}"'.encode()) == rows[1]


def test_dash_twice_or_from_a_terminal_is_a_usage_error(tmp_path):
    twice = _cli(["analyze", "-", "-"], tmp_path, input=GOOD)
    assert twice.returncode == 2 and b"only once" in twice.stderr
    import pty
    parent, child = pty.openpty()          # standard input is a terminal: nothing to read
    try:
        tty = _cli(["analyze", "-"], tmp_path, stdin=child)
    finally:
        os.close(parent)
        os.close(child)
    assert tty.returncode == 2 and b"is a terminal: pipe one in" in tty.stderr


@pytest.fixture()
def deadline(tmp_path):
    """A test reading a pipe fails after 60 s instead of waiting forever for a writer (the
    pipes of ``tmp_path`` are opened for writing and closed: a reader blocked in open(), in
    the read-ahead thread too, sees their end)."""
    import signal
    import stat

    def expired(signum, frame):
        for f in tmp_path.iterdir():
            if stat.S_ISFIFO(f.stat().st_mode):
                try:
                    os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
        raise TimeoutError("still reading the pipe after 60 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _fifo_fed(tmp_path, data: bytes):
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as f:
            for i in range(0, len(data), 7):      # small writes: short reads on the other end
                f.write(data[i:i + 7])
                f.flush()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    return fifo, writer


@pytest.mark.parametrize("compress", [False, True])
def test_fifo_reads_as_the_file(tmp_path, deadline, compress):
    fifo, writer = _fifo_fed(tmp_path, g.gzipped(GOOD) if compress else GOOD)
    result, rows = flows(tmp_path, fifo)
    writer.join(10)
    assert result.exit_code == 0, result.stderr
    assert len(rows) == 1 and rows[0]["capture"] == str(fifo)
    assert rows[0]["client_packets"] + rows[0]["server_packets"] == 7


def test_fifo_among_other_captures_reads_whole(tmp_path, deadline):
    """With several captures given, nothing reads ahead into the pipe (looking for rotated
    sets, say) and takes its first bytes from the reader."""
    other = tmp_path / "other.pcap"
    other.write_bytes(GOOD)
    fifo, writer = _fifo_fed(tmp_path, GOOD)
    result, rows = flows(tmp_path, other, fifo)
    writer.join(10)
    assert result.exit_code == 0, result.stderr
    assert [(r["capture"], r["client_packets"] + r["server_packets"]) for r in rows] == [
        (str(other), 7), (str(fifo), 7)]


def test_fifo_is_not_retired_so_never_read_twice(tmp_path, deadline, counted):
    """flows csv/parquet retire finished connections and may read the file again to repair
    4-tuples that came back: a pipe cannot be read again, so it is not retired (and its rows
    are those of the retiring read of the same file)."""
    from test_retire import EAGER, FAST
    from traceaudit.pipeline import ReadOptions, analyze_capture
    from traceaudit.report.flows import render_csv
    repaired = counted["reread"]
    data = g.pcap_bytes(MANY)
    options = ReadOptions(batch_rows=64, excerpts=False, frames_soon=False, retire=EAGER, **FAST)

    def csv(path) -> str:
        a = analyze_capture(path, options)
        assert a.stats.error is None and a.stats.packets == len(MANY)
        return b"".join(render_csv([a.table])).decode().replace(str(path), "X")

    regular = tmp_path / "x.pcap"
    regular.write_bytes(data)
    assert csv(regular) and repaired == [regular]           # the file was read twice
    fifo, writer = _fifo_fed(tmp_path, data)
    assert csv(fifo) == csv(regular)
    writer.join(10)
    assert repaired == [regular, regular]                   # the pipe once


@needs_tshark
def test_tshark_reader_refuses_a_pipe_clearly(tmp_path, deadline):
    fifo = tmp_path / "p.pcap"
    os.mkfifo(fifo)
    result, rows = flows(tmp_path, fifo, "--reader", "tshark")     # opens and closes it
    assert result.exit_code == 2 and rows == []
    assert f"{fifo}: the tshark reader reads regular files only" in result.stderr


# -- names -------------------------------------------------------------------------------------
ODD = b"odd \xff\xfe\n\x1b[31m name.pcap"            # not UTF-8, a newline, an escape code
ODD_SHOWN = "odd \\xff\\xfe\\n\\x1b[31m name.pcap"


def test_display_name():
    assert display_name(os.fsdecode(ODD)) == display_name(ODD) == ODD_SHOWN
    assert display_name(ODD_SHOWN) == ODD_SHOWN                 # idempotent
    assert display_name("plain/ütf-8 näme.pcap") == "plain/ütf-8 näme.pcap"
    assert display_name("tab\there\r\x7f\x85") == "tab\\there\\r\\x7f\\x85"
    assert one_line("a\nb") == "a\\nb"


@pytest.fixture()
def odd_dir(tmp_path):
    d = tmp_path / "caps"
    d.mkdir()
    with open(os.path.join(os.fsencode(d), ODD), "wb") as f:
        f.write(GOOD)
    with open(os.path.join(os.fsencode(d), b"cut \xe9\n.pcap"), "wb") as f:
        f.write(GOOD[:60])                                         # damaged: an error line
    return d


def test_odd_names_in_every_report(tmp_path, odd_dir):
    out = {k: tmp_path / f"r.{k}" for k in ("json", "html", "xml", "sarif")}
    result = run("analyze", odd_dir, "--json", out["json"], "--html", out["html"],
                 "--junit", out["xml"], "--sarif", out["sarif"])
    assert result.exit_code == 2                      # the cut file
    shown = f"{odd_dir}/{ODD_SHOWN}"
    cut_shown = f"{odd_dir}/cut \\xe9\\n.pcap"
    doc = json.loads(out["json"].read_text())
    assert [c["path"] for c in doc["captures"]] == [cut_shown, shown]
    assert {c["capture"] for c in doc["connections"]} == {shown}      # none in the cut one
    assert ODD_SHOWN in out["html"].read_text()
    assert f'name="{shown}"' in out["xml"].read_text()
    sarif = json.loads(out["sarif"].read_text())
    assert shown in [a["properties"]["path"] for a in sarif["runs"][0]["artifacts"]]
    # the terminal and the error lines: escaped, one line each, no escape code
    for text in (result.stdout, result.stderr):
        assert "\x1b" not in text and "\udcff" not in text
    (error,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert error.startswith(f"traceaudit: error: {cut_shown} at byte offset 24: ")
    assert ODD_SHOWN in result.stdout


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json", "table"])
def test_odd_names_in_flows(tmp_path, odd_dir, fmt):
    target = tmp_path / f"flows.{fmt}"
    result = run("flows", odd_dir / os.fsdecode(ODD), "--format", fmt, "-o", target)
    assert result.exit_code == 0, result.stderr
    if fmt == "parquet":
        import pyarrow.parquet as pq
        names = set(pq.read_table(target).column("capture").to_pylist())
        assert names == {f"{odd_dir}/{ODD_SHOWN}"}
    elif fmt == "json":
        assert json.loads(target.read_text())[0]["capture"] == f"{odd_dir}/{ODD_SHOWN}"
    else:
        assert ODD_SHOWN in target.read_text("utf-8")


def test_odd_names_in_states(odd_dir):
    result = run("states", odd_dir / os.fsdecode(ODD), "--at", "0.001")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"{odd_dir}/{ODD_SHOWN} at ")


# -- one capture's bug is that capture's ---------------------------------------------------------
@pytest.fixture()
def two(tmp_path):
    files = []
    for name in ("a-boom.pcap", "b-good.pcap"):
        (tmp_path / name).write_bytes(GOOD)
        files.append(tmp_path / name)
    return files


@pytest.fixture()
def exploding_decoder(monkeypatch):
    """The decoder raises (in the read-ahead thread) for files named *boom*."""
    from traceaudit.capture import native
    real = native.NativeSource._emit

    def emit(self, buf, n):
        if "boom" in self.path:
            raise ValueError("decoder exploded\nsecond line")
        return real(self, buf, n)

    monkeypatch.setattr(native.NativeSource, "_emit", emit)


BUG = ("a-boom.pcap: internal error: ValueError: decoder exploded\\nsecond line — this is a "
       "bug, please report it")


def test_bug_in_one_capture_is_reported_against_it(tmp_path, two, exploding_decoder):
    out = tmp_path / "r.json"
    result = run("analyze", *two, "--json", out, "--junit", tmp_path / "j.xml")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert f"traceaudit: error: {two[0].parent}/{BUG}" in lines
    assert "traceaudit: (set TRACEAUDIT_DEBUG=1 for the traceback)" in lines
    doc = json.loads(out.read_text())
    bad, good = doc["captures"]
    assert bad["error"].endswith(BUG) and not bad["packets"]          # (nothing kept)
    assert good["error"] is None and good["packets"] == 7
    assert {c["capture"] for c in doc["connections"]} == {str(two[1])}
    assert 'type="internal-error"' in (tmp_path / "j.xml").read_text()


def test_bug_traceback_with_debug(two, exploding_decoder):
    result = run("flows", *two, env={"TRACEAUDIT_DEBUG": "1"})
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "in emit" in result.stderr and result.stdout.count("10.0.0.1") == 1


def test_bug_in_csv_flows_and_states(tmp_path, two, exploding_decoder):
    result = run("flows", *two, "--format", "csv", "-o", tmp_path / "f.csv")
    assert result.exit_code == 2 and BUG in result.stderr
    assert (tmp_path / "f.csv").read_text().count("b-good.pcap") == 1
    result = run("states", two[0], "--at", "0")
    assert result.exit_code == 2 and BUG in result.stderr


def test_bug_in_the_rules_for_one_capture(tmp_path, two, monkeypatch):
    from traceaudit import rules
    real = rules.run_rules

    def run_rules(analysis, config):
        if "boom" in analysis.stats.path:
            raise KeyError("no such column")
        return real(analysis, config)

    monkeypatch.setattr(rules, "run_rules", run_rules)
    out = tmp_path / "r.json"
    result = run("analyze", *two, "--json", out)
    assert result.exit_code == 2
    assert "a-boom.pcap: internal error: KeyError: 'no such column' — this is a bug" \
        in result.stderr
    assert [c["packets"] or 0 for c in json.loads(out.read_text())["captures"]] == [0, 7]


def test_bug_in_one_report_still_writes_the_others(tmp_path, two, monkeypatch):
    from traceaudit.report import junit
    monkeypatch.setattr(junit, "render_junit", lambda report: 1 / 0)
    result = run("analyze", two[1], "--junit", tmp_path / "j.xml", "--json", tmp_path / "r.json")
    assert result.exit_code == 2
    assert f"traceaudit: error: internal error writing --junit {tmp_path}/j.xml: " \
        "ZeroDivisionError: division by zero — this is a bug, please report it" \
        in result.stderr.splitlines()
    assert not (tmp_path / "j.xml").exists() and (tmp_path / "r.json").exists()
    assert "No findings" in result.stdout


def test_any_other_crash_is_exit_2_not_1(tmp_path, two, monkeypatch):
    from traceaudit import audit
    monkeypatch.setattr(audit, "build_report", lambda *a, **k: {}["boom"])
    result = run("analyze", two[1])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-2:] == [
        "traceaudit: error: internal error in traceaudit analyze: KeyError: 'boom' — this is "
        "a bug, please report it", "traceaudit: (set TRACEAUDIT_DEBUG=1 for the traceback)"]


@pytest.mark.parametrize("fmt", ["github", "gitlab", "json-lines"])
def test_odd_names_in_baselines_and_ci_annotations(tmp_path, fmt):
    """Findings under an odd name: --write-baseline (was a TypeError), CI formats, and the
    baseline matches them on the next run."""
    odd = os.path.join(os.fsencode(tmp_path), ODD)
    with open(odd, "wb") as f:
        f.write((ROOT / "sample_pcaps" / "close-wait-leak.pcap").read_bytes())
    base, ci = tmp_path / "base.json", tmp_path / "ci.out"
    result = run("analyze", odd, "--write-baseline", base, "--output-format", fmt, "-o", ci)
    assert result.exit_code == 0, result.stderr
    shown = f"{tmp_path}/{ODD_SHOWN}"
    assert {e["capture"] for e in json.loads(base.read_text())["findings"].values()} == {shown}
    text = ci.read_text("utf-8")
    assert (shown if fmt == "github" else json.dumps(shown)[1:-1]) in text
    again = run("analyze", odd, "--baseline", base)
    assert again.exit_code == 0 and "suppressed by the baseline" in again.stdout


def test_bug_in_a_stage_stops_the_read_ahead_thread(tmp_path, two, monkeypatch):
    """The trackers raise while the reader thread is ahead of them: the thread is stopped and
    the next capture is read."""
    import threading

    from traceaudit import pipeline
    real = pipeline._Stages.add

    def add(self, batch):
        if "boom" in self.source.path:
            raise RuntimeError("tracker bug")
        return real(self, batch)

    monkeypatch.setattr(pipeline._Stages, "add", add)
    result, rows = flows(tmp_path, *two)
    assert result.exit_code == 2 and "a-boom.pcap: internal error: RuntimeError: tracker bug" \
        in result.stderr
    assert [r["capture"] for r in rows] == [str(two[1])]
    assert not [t for t in threading.enumerate() if t.name == "traceaudit-read-ahead"]
