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
from traceaudit.pipeline import ReadOptions, analyze_capture, analyze_captures
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
