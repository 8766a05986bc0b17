"""Rotated capture sets read as one timeline (issue 18): every sample capture, split by
``editcap -c``, ``editcap -i`` and renamed as tcpdump -C names, gives the connections,
states, timelines and findings of the whole file, with frames numbered as in the merged
capture; directory scans try every file by its magic and list what is not a capture."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traceaudit.capture import CaptureSet, group_captures, read_all, scan_paths
from traceaudit.capture.chain import locate
from traceaudit.pipeline import analyze_capture, analyze_captures
from traceaudit.rules import run_rules
from traceaudit.rules.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted(p for p in (ROOT / "sample_pcaps").iterdir()
                 if p.suffix in (".pcap", ".pcapng"))
METHODS = ("editcap-c", "editcap-i", "tcpdump-C")

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap")


def _split(sample: Path, method: str, into: Path) -> None:
    """``sample`` in at least three pieces (where it has the packets) in directory ``into``."""
    into.mkdir(parents=True)
    _, stats = read_all(sample)
    if method == "editcap-i":
        span = (stats.last_ts_ns - stats.first_ts_ns) / 1e9
        args = ["-i", f"{max(span / 3, 0.001):.6f}"]
    else:
        args = ["-c", str(max(stats.packets // 3, 1))]
    out = into / f"piece{sample.suffix}"
    subprocess.run(["editcap", *args, str(sample), str(out)], check=True,
                   capture_output=True)
    if method == "tcpdump-C":
        # tcpdump -C names its pieces out.pcap, out.pcap1, out.pcap2 … in order
        for n, piece in enumerate(sorted(into.iterdir())):
            piece.rename(into / (f"out{sample.suffix}" + (str(n) if n else "")))


@pytest.fixture(scope="module")
def whole():
    config = load_config(None)
    out = {}
    for sample in SAMPLES:
        a = analyze_capture(sample)
        out[sample.name] = (a, run_rules(a, config))
    return out


def _finding_key(f) -> tuple:
    details = {k: v for k, v in f.details.items() if k != "frames_in_files"}
    return (f.rule, f.code, int(f.severity), f.connection, f.endpoint, f.host, f.ts,
            tuple(f.frames), f.message, f.display_filter, repr(sorted(details.items())))


@pytest.mark.parametrize("method", METHODS)
def test_split_samples_read_as_the_whole_capture(method, whole, tmp_path):
    config = load_config(None)
    for sample in SAMPLES:
        where = tmp_path / sample.stem
        _split(sample, method, where)
        items = group_captures(scan_paths([where]).files)
        assert len(items) == 1 and isinstance(items[0], CaptureSet), (sample.name, items)
        assert len(items[0].files) >= 2, sample.name
        analyses = list(analyze_captures(items))
        assert len(analyses) == 1, sample.name
        got = analyses[0]
        ref, ref_findings = whole[sample.name]
        st, rs = got.stats, ref.stats
        assert not st.warnings and st.error is None, (sample.name, st.warnings)
        assert (st.packets, st.tcp_packets, st.first_ts_ns, st.last_ts_ns) == \
            (rs.packets, rs.tcp_packets, rs.first_ts_ns, rs.last_ts_ns), sample.name
        assert [Path(p.path) for p in st.parts] == list(items[0].files)
        assert sum(p.packets for p in st.parts) == rs.packets
        # connections, their final states, closers, Zeek's view: everything but the name
        pd.testing.assert_frame_equal(got.flows.drop(columns="capture"),
                                      ref.flows.drop(columns="capture"), obj=sample.name)
        assert np.array_equal(got.events, ref.events), sample.name
        pd.testing.assert_frame_equal(got.zeek_rows.drop(columns="capture", errors="ignore"),
                                      ref.zeek_rows.drop(columns="capture", errors="ignore"))
        findings = run_rules(got, config)
        assert [_finding_key(f) for f in findings] == \
            [_finding_key(f) for f in ref_findings], sample.name
        for f in findings:
            assert f.capture == str(items[0].files[0])
            assert f.details["frames_in_files"] == [f"{n} frame {k}"
                                                    for n, k in locate(st, f.frames)]
        _check_file_frames(got, findings)


def _check_file_frames(analysis, findings) -> None:
    """Each finding frame's file and frame within it holds that very packet."""
    batches = {}
    whole = {}
    offset = 0
    for part in analysis.stats.parts:
        b, _ = read_all(part.path)
        batches[Path(part.path).name] = b
        for frame, ts in zip(b["frame"].tolist(), b["ts_ns"].tolist()):
            whole[offset + frame] = ts
        offset += part.packets
    for f in findings[:20]:
        for frame, text in zip(f.frames, f.details["frames_in_files"]):
            name, _, k = text.rpartition(" frame ")
            b = batches[name]
            row = np.flatnonzero(b["frame"] == int(k))
            assert len(row) == 1 and int(b["ts_ns"][row[0]]) == whole[frame]


def test_issue_example_close_wait_leak_split_by_5(tmp_path):
    """``editcap -c 5`` of close-wait-leak-rst.pcap: one connection and its three findings,
    TA101 an error, as for the whole file."""
    sample = ROOT / "sample_pcaps" / "close-wait-leak-rst.pcap"
    subprocess.run(["editcap", "-c", "5", str(sample), str(tmp_path / "split.pcap")],
                   check=True, capture_output=True)
    items = group_captures(scan_paths([tmp_path]).files)
    (a,) = analyze_captures(items)
    findings = run_rules(a, load_config(None))
    assert len(a.table) == 1
    assert sorted(f.code for f in findings) == ["TA101", "TA102", "TA103"]
    assert [f.severity.label for f in findings if f.code == "TA101"] == ["error"]


def test_public_api_reads_a_split_as_one_capture_unless_told_not_to(tmp_path):
    import traceaudit
    sample = ROOT / "sample_pcaps" / "close-wait-leak-rst.pcap"
    subprocess.run(["editcap", "-c", "5", str(sample), str(tmp_path / "split.pcap")],
                   check=True, capture_output=True)
    whole = traceaudit.analyze(sample)
    joined = traceaudit.analyze(tmp_path)
    assert len(joined.flows) == 1 and len(joined.captures) == 1
    assert sorted(joined.findings.code) == sorted(whole.findings.code) == ["TA101", "TA102",
                                                                          "TA103"]
    assert joined.exit_code == whole.exit_code == 1
    apart = traceaudit.analyze(tmp_path, merge=False)
    assert len(apart.captures) == 3 and len(apart.flows) == 3


def test_tcpdump_names_found_and_non_captures_listed(tmp_path):
    sample = ROOT / "sample_pcaps" / "close-wait-leak-rst.pcap"
    subprocess.run(["editcap", "-c", "4", str(sample), str(tmp_path / "x.pcap")],
                   check=True, capture_output=True)
    for n, piece in enumerate(sorted(tmp_path.iterdir())):
        piece.rename(tmp_path / ("out.pcap" + (str(n) if n else "")))
    (tmp_path / "notes.txt").write_text("not a capture\n")
    (tmp_path / "renamed.bin").write_bytes(sample.read_bytes())   # a capture by its magic
    scan = scan_paths([tmp_path])
    assert [p.name for p in scan.files] == ["out.pcap", "out.pcap1", "out.pcap2", "renamed.bin"]
    assert [p.name for p in scan.skipped] == ["notes.txt"]
    items = group_captures(scan.files)
    assert [p.name for p in items[0].files] == ["out.pcap", "out.pcap1", "out.pcap2"]
    assert items[1].name == "renamed.bin"
    assert [str(i) for i in group_captures(scan.files, merge=False)] == \
        [str(p) for p in scan.files]


def test_sample_directory_is_not_taken_for_a_set():
    scan = scan_paths([ROOT / "sample_pcaps"])
    assert scan.files == SAMPLES
    assert {p.suffix for p in scan.skipped} == {".json", ".md", ".py"}
    assert group_captures(scan.files) == SAMPLES


def test_unrelated_captures_with_digits_in_their_names_stay_apart():
    """Zeek's test traces (``tcp.one-sided-2745.pcap``, ``tunnels.geneve-47101.pcap`` …)
    are separate captures."""
    from conftest import CORPUS_TRACES
    if not CORPUS_TRACES:
        pytest.skip("Zeek's trace corpus is not here")
    assert group_captures(CORPUS_TRACES) == CORPUS_TRACES


def _pieces(tmp_path: Path, sample: str, n: int) -> list[Path]:
    src = ROOT / "sample_pcaps" / sample
    subprocess.run(["editcap", "-c", str(n), str(src), str(tmp_path / "p.pcap")],
                   check=True, capture_output=True)
    return sorted(tmp_path.glob("p_*.pcap"))


def test_ring_that_wrapped_is_read_from_its_oldest_piece(tmp_path):
    """tcpdump -W: out.pcap0 … out.pcap2 where the writer wrapped round to out.pcap0."""
    pieces = _pieces(tmp_path, "time-wait-pileup.pcap", 7000)
    assert len(pieces) == 3
    for piece, n in zip(pieces, (1, 2, 0)):
        piece.rename(tmp_path / f"out.pcap{n}")
    (s,) = group_captures(scan_paths([tmp_path]).files)
    assert [p.name for p in s.files] == ["out.pcap1", "out.pcap2", "out.pcap0"]


def test_strftime_names_ordered_by_time(tmp_path):
    pieces = _pieces(tmp_path, "time-wait-pileup.pcap", 7000)
    # tcpdump -G 60 -w 'trace-%d.%m.%Y-%H%M.pcap': names that do not sort by time
    names = ["trace-21.11.2026-1230.pcap", "trace-21.11.2026-1201.pcap",
             "trace-21.11.2026-1159.pcap"]
    for piece, name in zip(pieces, names):
        piece.rename(tmp_path / name)
    (s,) = group_captures(scan_paths([tmp_path]).files)
    assert s.joined_by.startswith("time-stamped") and [p.name for p in s.files] == names
    a, = analyze_captures([s])
    assert len(a.table) == 2000


def test_overlapping_pieces_are_read_apart_with_a_warning(tmp_path):
    """A "piece" that starts before the previous one ends is not the next piece: the
    timeline stops there and the rest is read as captures of their own."""
    src = ROOT / "sample_pcaps" / "close-wait-leak-rst.pcap"
    for name in ("out.pcap", "out.pcap1"):
        shutil.copy(src, tmp_path / name)
    (s,) = group_captures(scan_paths([tmp_path]).files)
    a, b = analyze_captures([s])
    assert [Path(p.path).name for p in a.stats.parts] == ["out.pcap"]
    assert "out.pcap1 starts" in a.stats.warnings[0] and "of its own" in a.stats.warnings[0]
    assert Path(b.stats.path).name == "out.pcap1" and not b.stats.parts
    assert len(a.table) == len(b.table) == 1


def test_cli_merge_no_merge_and_listing(tmp_path):
    from click.testing import CliRunner

    from traceaudit.cli import main
    pieces = _pieces(tmp_path, "close-wait-leak-rst.pcap", 5)
    (tmp_path / "notes.txt").write_text("x")
    run = CliRunner().invoke
    r = run(main, ["analyze", str(tmp_path), "--json", str(tmp_path / "r.json"),
                   "--html", str(tmp_path / "r.html"), "--junit", str(tmp_path / "r.xml")])
    assert r.exit_code == 1, r.output + r.stderr
    html = (tmp_path / "r.html").read_text()
    assert "open in Wireshark" in html and f"{pieces[2].name} frame 1" in html
    junit = (tmp_path / "r.xml").read_text()
    assert junit.count('name="timeline_file_') == 3 and 'name="merged_capture"' in junit
    assert "1 capture(s) (3 files read as 1 timeline(s))" in r.output
    assert "not captures, skipped (1): " + str(tmp_path / "notes.txt") in r.output
    command = "mergecap -a -w merged.pcapng " + " ".join(map(str, pieces))
    assert "".join(command.split()) in "".join(r.output.split())     # (wrapped lines)
    import json
    doc = json.loads((tmp_path / "r.json").read_text())
    (cap,) = doc["captures"]
    assert [f["first_frame"] for f in cap["timeline"]["files"]] == [1, 6, 11]
    assert doc["skipped"] == [{"path": str(tmp_path / "notes.txt"), "reason": "not a capture"}]
    r = run(main, ["analyze", "--no-merge", *map(str, pieces)])
    assert "3 capture(s), 11 packets, 3 TCP connections" in r.output
    # --merge: two captures of different connections as one timeline
    other = ROOT / "sample_pcaps" / "normal-close-client.pcap"
    r = run(main, ["analyze", "--merge", str(other), str(pieces[0])])
    assert "1 capture(s) (2 files read as 1 timeline(s))" in r.output
    r = run(main, ["flows", str(tmp_path), "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.count("\n") == 2
    assert "not a capture, skipped: " in r.stderr


def test_retiring_read_of_sets_equals_the_whole_file(tmp_path, counted):
    """flows --format csv|parquet retires finished connections and may re-read the capture
    for 4-tuples that came back: for a set, it re-reads the set."""
    from test_retire import EAGER, FAST, csv_of
    for sample in SAMPLES:
        where = tmp_path / sample.stem
        _split(sample, "editcap-c", where)
        (s,) = group_captures(scan_paths([where]).files)
        got = csv_of(s, EAGER, batch_rows=64, **FAST).replace(
            str(s).encode(), str(sample).encode())
        assert got == csv_of(sample, None, **FAST), sample.name
    assert any(isinstance(p, CaptureSet) for p in counted["reread"])


@pytest.mark.parametrize("kind", ["pcap", "pcap-be", "pcap-ns", "pcap-ns-be", "pcapng",
                                  "pcapng-be-ns", "pcapng-pb", "pcap.gz", "pcapng.gz"])
def test_peek_and_scan_know_every_capture_by_its_magic(kind, tmp_path):
    """A capture is recognised by its first bytes (pcap in both byte orders, micro- and
    nanoseconds; pcapng; gzip of them), whatever its name; its first packet time is read
    from its first record."""
    import pcapgen as g
    from traceaudit.capture.sets import is_capture, peek
    c = g.Conversation(t0_ns=1_700_000_000_123_456_789).handshake().close_by("c")
    if kind.startswith("pcapng"):
        data = g.pcapng_section(c.frames, big_endian="-be" in kind,
                                interfaces=[(1, 9 if "-ns" in kind else None)],
                                block="pb" if kind.endswith("-pb") else "epb")
    else:
        data = g.pcap_bytes(c.frames, big_endian="-be" in kind, nano="-ns" in kind)
    if kind.endswith(".gz"):
        data = g.gzipped(data)
    path = tmp_path / "capture.data"
    path.write_bytes(data)
    (tmp_path / "other.data").write_bytes(data[4:])
    assert is_capture(path) and not is_capture(tmp_path / "other.data")
    _, stats = read_all(path)
    assert peek(path).first_ts_ns == stats.first_ts_ns
    assert peek(path).link_type == 1
    scan = scan_paths([tmp_path])
    assert scan.files == [path] and scan.skipped == [tmp_path / "other.data"]


def test_restarted_writer_starts_another_set(tmp_path):
    """Two editcap (or dumpcap) runs with one prefix: the file numbers start again, so
    the second run is another capture, not more pieces of the first."""
    for sample in ("close-wait-leak-rst.pcap", "time-wait-pileup.pcap"):
        src = ROOT / "sample_pcaps" / sample
        subprocess.run(["editcap", "-c", "7000", str(src), str(tmp_path / "p.pcap")],
                       check=True, capture_output=True)
    items = group_captures(scan_paths([tmp_path]).files)
    assert sorted(len(getattr(s, "files", [s])) for s in items) == [1, 3]
    assert [len(a.table) for a in analyze_captures(items)] in ([1, 2000], [2000, 1])


@pytest.mark.skipif(shutil.which("mergecap") is None, reason="needs mergecap")
def test_frames_are_those_of_mergecap_a(tmp_path):
    """The timeline's rows carry the frame numbers of ``mergecap -a -w merged FILES``, the
    command the reports print."""
    from traceaudit.capture import open_capture
    from traceaudit.capture.batch import PacketBatch
    from traceaudit.capture.chain import merge_command
    pieces = _pieces(tmp_path, "time-wait-pileup.pcap", 5000)
    (s,) = group_captures(pieces)
    src = open_capture(s)
    got = PacketBatch.concat(list(src.batches()))
    command = merge_command(src.stats, str(tmp_path / "merged.pcapng"))
    subprocess.run(command.split(), check=True, capture_output=True)
    want, _ = read_all(tmp_path / "merged.pcapng")
    assert len(s.files) == 5 and len(got) == len(want) > 20000
    for column in ("frame", "ts_ns", "seq", "flags"):
        assert np.array_equal(got[column], want[column]), column


def test_a_file_named_as_a_capture_is_still_read(tmp_path):
    """In a directory, a file whose name claims a capture but whose bytes are not one is
    read (and reported unreadable, exit 2) as before; only other names are skipped."""
    (tmp_path / "broken.pcap").write_bytes(b"<html>error</html>")
    (tmp_path / "notes.txt").write_text("x")
    scan = scan_paths([tmp_path])
    assert scan.files == [tmp_path / "broken.pcap"]
    assert scan.skipped == [tmp_path / "notes.txt"]


def test_a_damaged_piece_marks_the_timeline_and_the_next_pieces_are_read(tmp_path):
    pieces = _pieces(tmp_path, "time-wait-pileup.pcap", 7000)
    data = pieces[1].read_bytes()
    pieces[1].write_bytes(data[:len(data) // 2])          # cut in the middle of a record
    (s,) = group_captures(pieces)
    (a,) = analyze_captures([s])
    st = a.stats
    assert st.error is not None and st.error.path == str(pieces[1])
    assert st.parts[2].packets > 0 and st.parts[2].error is None
    assert st.packets == sum(p.packets for p in st.parts)
    assert any(w.startswith(pieces[1].name + ": ") for w in st.warnings)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
@pytest.mark.parametrize("fmt", ["github", "gitlab", "sarif"])
def test_ci_outputs_point_at_the_piece_holding_the_first_frame(tmp_path, fmt):
    """A CI annotation (GitHub ``file``/``line``, GitLab ``location``, SARIF's artifact)
    names the piece of a rotated set that holds the finding's first frame and its number in
    that file, not the timeline's first file: tshark finds the same packet there as at the
    merged frame of the whole capture."""
    import json
    import re
    import sys

    from conftest import tshark_fields
    sample = ROOT / "sample_pcaps" / "close-wait-leak-rst.pcap"
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    subprocess.run(["editcap", "-c", "5", str(sample), str(pieces / "out.pcap")], check=True,
                   capture_output=True)
    out = tmp_path / "out.txt"
    cmd = [sys.executable, "-m", "traceaudit", "analyze", str(pieces),
           *(["--sarif", str(out)] if fmt == "sarif" else
             ["--output-format", fmt, "-o", str(out)])]
    subprocess.run(cmd, capture_output=True, timeout=120, cwd=ROOT)
    text = out.read_text()
    if fmt == "github":
        places = [(m[1], int(m[2]), int(m[3])) for m in re.finditer(
            r"file=([^,]+),line=(\d+),.*?::.*?%0Aframes: (\d+)", text)]
    elif fmt == "gitlab":
        places = [(i["location"]["path"], i["location"]["lines"]["begin"],
                   int(re.search(r"frame (\d+)", i["description"])[1]))
                  for i in json.loads(text)]
    else:
        run = json.loads(text)["runs"][0]
        uris = [a["location"]["uri"] for a in run["artifacts"]]
        assert len(uris) == len(list(pieces.iterdir()))          # every piece an artifact
        places = [(uris[r["locations"][0]["physicalLocation"]["artifactLocation"]["index"]]
                   .removeprefix("file://"), r["properties"]["fileFrame"],
                   r["properties"]["frames"][0]) for r in run["results"]]
    assert len(places) >= 3
    assert any(Path(p).name != sorted(pieces.iterdir())[0].name for p, _, _ in places)
    fields = ["frame.time_epoch", "tcp.flags", "tcp.seq_raw"]
    for path, in_file, merged in places:
        there = tshark_fields(Path(path), fields, f"frame.number == {in_file}")
        assert there and there == tshark_fields(sample, fields, f"frame.number == {merged}")
