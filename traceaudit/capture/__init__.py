"""Capture readers: bytes of pcap / pcapng files → columnar PacketBatches."""

from __future__ import annotations

from pathlib import Path

from traceaudit.capture.batch import COLUMNS, DEFAULT_BATCH_ROWS, PacketBatch
from traceaudit.capture.sets import CAPTURE_SUFFIXES, CaptureSet, group_captures, scan_paths
from traceaudit.capture.source import CaptureSource, CaptureStats
from traceaudit.errors import CaptureError

READERS = ("native", "tshark")


def open_capture(path: str | Path | CaptureSet, *, reader: str = "native",
                 verify_checksums: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
                 seg_flags: bool = False) -> CaptureSource:
    """A reader bound to ``path``; nothing is read until ``batches()`` is iterated.

    ``seg_flags``: ask for the optional per-row ``seg_flags`` column (``batch.OPTIONAL_COLUMNS``;
    bad TCP checksum, payload or header cut by the snap length, bad IPv4 header checksum). Only
    the native reader makes it; batches from the others do not carry it.

    A ``CaptureSet`` (rotated pieces of one capture) is read as one timeline
    (``chain.ChainedSource``, each file with ``reader``).
    """
    if isinstance(path, CaptureSet):
        from traceaudit.capture.chain import ChainedSource
        return ChainedSource(path, reader=reader, verify_checksums=verify_checksums,
                             batch_rows=batch_rows, seg_flags=seg_flags)
    if reader == "native":
        from traceaudit.capture.native import NativeSource
        return NativeSource(str(path), batch_rows=batch_rows, verify_checksums=verify_checksums,
                            seg_flags=seg_flags)
    if reader == "tshark":
        from traceaudit.capture.tshark import TsharkSource
        return TsharkSource(str(path), batch_rows=batch_rows, verify_checksums=verify_checksums)
    raise ValueError(f"unknown reader {reader!r}; choose one of {', '.join(READERS)}")


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, and the captures inside directories (sorted, recursively; every file
    is tried by its magic, whatever its name: ``sets.scan_paths`` also says which were not
    captures)."""
    return scan_paths(paths).files


def read_all(path: str | Path, **kwargs) -> tuple[PacketBatch, CaptureStats]:
    """Every TCP row of a (small) capture in one batch, with its stats. For tests and tools."""
    src = open_capture(path, **kwargs)
    batch = PacketBatch.concat(list(src.batches()))
    return batch, src.stats


__all__ = ["CAPTURE_SUFFIXES", "COLUMNS", "CaptureError", "CaptureSet", "CaptureSource",
           "CaptureStats", "PacketBatch", "expand_paths", "group_captures", "open_capture",
           "read_all", "scan_paths"]
