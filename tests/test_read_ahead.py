"""Read-ahead thread: same results as a plain read, errors in place; kept batches stay intact."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pcapgen as g
from traceaudit.capture import open_capture
from traceaudit.capture.prefetch import read_ahead
from traceaudit.pipeline import ReadOptions, analyze_capture

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "sample_pcaps").glob("*.pcap*"))


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "traceaudit-read-ahead"]


def test_items_arrive_in_order():
    assert list(read_ahead(lambda: iter(range(1000)), depth=2)) == list(range(1000))
    assert not _workers()


def test_error_arrives_after_the_items_before_it():
    def broken():
        yield from range(5)
        raise ValueError("damaged at byte 1234")

    got = []
    with pytest.raises(ValueError, match="byte 1234"):
        for item in read_ahead(broken):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    assert not _workers()


def test_error_before_the_first_item():
    def refuses():
        raise OSError("not a capture")

    with pytest.raises(OSError, match="not a capture"):
        list(read_ahead(refuses))


def test_leaving_early_stops_the_reader_and_closes_its_iterator():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    it = read_ahead(endless, depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert closed.is_set()
    assert not _workers()


def _many_batches() -> bytes:
    frames = []
    for i in range(40):
        conv = g.Conversation(cport=40000 + i)
        conv.handshake().send("c", g.ACK | g.PSH, b"x" * (i + 1)).close_by("c")
        frames += conv.frames
    return g.pcap_bytes(frames)


def test_batches_kept_by_the_caller_are_never_overwritten(tmp_path):
    """Batches are decoded ahead of use; a caller that keeps every batch must still see each
    one as it was when it arrived (no buffer of the reader is shared with a batch)."""
    path = tmp_path / "many.pcap"
    path.write_bytes(_many_batches())
    src = open_capture(path, batch_rows=7)
    kept, snapshots = [], []
    for batch in src.batches():
        kept.append(batch)
        snapshots.append({k: v.copy() for k, v in batch.columns.items()})
    assert len(kept) > 10
    for batch, snap in zip(kept, snapshots):
        for name, values in snap.items():
            assert np.array_equal(batch.columns[name], values), name
    frames = np.concatenate([b["frame"] for b in kept])
    assert np.array_equal(frames, np.arange(1, len(frames) + 1))


@pytest.mark.parametrize("path", SAMPLES[:6], ids=lambda p: p.name)
def test_read_ahead_changes_nothing(path):
    plain = analyze_capture(path, ReadOptions(read_ahead=False, batch_rows=5))
    ahead = analyze_capture(path, ReadOptions(read_ahead=True, batch_rows=5))
    pd.testing.assert_frame_equal(plain.flows, ahead.flows)
    assert np.array_equal(plain.events, ahead.events)
    assert np.array_equal(plain.tracked.endpoints, ahead.tracked.endpoints)
    assert np.array_equal(plain.tracked.conns, ahead.tracked.conns)


def test_damage_is_reported_the_same_with_read_ahead(tmp_path):
    data = _many_batches()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:len(data) // 2 + 5])
    plain = analyze_capture(path, ReadOptions(read_ahead=False, batch_rows=7))
    ahead = analyze_capture(path, ReadOptions(read_ahead=True, batch_rows=7))
    assert plain.stats.error is not None and ahead.stats.error is not None
    assert str(plain.stats.error) == str(ahead.stats.error)
    assert plain.stats.packets == ahead.stats.packets > 0
    pd.testing.assert_frame_equal(plain.flows, ahead.flows)


def test_console_script_flushes_everything_before_it_exits(tmp_path):
    """``run()`` leaves with os._exit: whatever was written to stdout must still arrive."""
    from traceaudit.report.flows import render_csv
    path = SAMPLES[0]
    proc = subprocess.run([sys.executable, "-m", "traceaudit.cli", "flows", str(path),
                           "--format", "csv"], capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = b"".join(render_csv([analyze_capture(path).table]))
    assert proc.stdout == expected
    bad = subprocess.run([sys.executable, "-m", "traceaudit.cli", "flows", str(tmp_path / "no")],
                         capture_output=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and b"cannot open" in bad.stderr
