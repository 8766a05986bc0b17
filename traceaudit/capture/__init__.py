"""Capture readers: bytes of pcap / pcapng files → columnar PacketBatches."""

from __future__ import annotations

from pathlib import Path

from traceaudit.capture.batch import COLUMNS, DEFAULT_BATCH_ROWS, PacketBatch
from traceaudit.capture.source import CaptureSource, CaptureStats
from traceaudit.errors import CaptureError

READERS = ("native", "tshark")
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz", ".ntar")


def open_capture(path: str | Path, *, reader: str = "native", verify_checksums: bool = False,
                 batch_rows: int = DEFAULT_BATCH_ROWS, seg_flags: bool = False) -> CaptureSource:
    """A reader bound to ``path``; nothing is read until ``batches()`` is iterated.

    ``seg_flags``: ask for the optional per-row ``seg_flags`` column (``batch.OPTIONAL_COLUMNS``;
    bad TCP checksum, payload or header cut by the snap length, bad IPv4 header checksum). Only
    the native reader makes it; batches from the others do not carry it.
    """
    if reader == "native":
        from traceaudit.capture.native import NativeSource
        return NativeSource(str(path), batch_rows=batch_rows, verify_checksums=verify_checksums,
                            seg_flags=seg_flags)
    if reader == "tshark":
        from traceaudit.capture.tshark import TsharkSource
        return TsharkSource(str(path), batch_rows=batch_rows, verify_checksums=verify_checksums)
    raise ValueError(f"unknown reader {reader!r}; choose one of {', '.join(READERS)}")


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, and the capture files inside directories (sorted, recursively)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*")
                              if f.is_file() and f.name.lower().endswith(CAPTURE_SUFFIXES)))
        else:
            out.append(p)
    return out


def read_all(path: str | Path, **kwargs) -> tuple[PacketBatch, CaptureStats]:
    """Every TCP row of a (small) capture in one batch, with its stats. For tests and tools."""
    src = open_capture(path, **kwargs)
    batch = PacketBatch.concat(list(src.batches()))
    return batch, src.stats


__all__ = ["COLUMNS", "CaptureError", "CaptureSource", "CaptureStats", "PacketBatch",
           "expand_paths", "open_capture", "read_all"]
