"""Where the stages meet: captures → batches → flows (→ trackers → findings in later stages)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from traceaudit.capture import CaptureStats, open_capture
from traceaudit.capture.batch import DEFAULT_BATCH_ROWS
from traceaudit.errors import CaptureError
from traceaudit.flows import FLOW_COLUMNS, FlowBuilder


@dataclass(frozen=True)
class ReadOptions:
    reader: str = "native"
    verify_checksums: bool = False
    batch_rows: int = DEFAULT_BATCH_ROWS


@dataclass
class CaptureAnalysis:
    """Everything learned from one capture file."""

    stats: CaptureStats
    flows: pd.DataFrame

    @property
    def failed(self) -> bool:
        return self.stats.error is not None


ProgressHook = Callable[[CaptureStats], None]


def analyze_capture(path: str | Path, options: ReadOptions = ReadOptions(),
                    progress: ProgressHook | None = None) -> CaptureAnalysis:
    """Read one capture into its flow table. Never raises for a bad file: see ``stats.error``."""
    source = open_capture(path, reader=options.reader, verify_checksums=options.verify_checksums,
                          batch_rows=options.batch_rows)
    builder = FlowBuilder()
    try:
        for batch in source.batches():
            builder.add(batch)
            if progress:
                progress(source.stats)
    except CaptureError as exc:
        source.stats.error = exc
    return CaptureAnalysis(source.stats, builder.table(str(path)))


def analyze_captures(paths: list[Path], options: ReadOptions = ReadOptions(),
                     progress: ProgressHook | None = None) -> Iterator[CaptureAnalysis]:
    """One analysis per file, in order; a bad file yields an analysis with ``stats.error``."""
    for path in paths:
        yield analyze_capture(path, options, progress)


def empty_flow_table() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in FLOW_COLUMNS})
