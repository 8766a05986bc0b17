"""Where the stages meet: captures → batches → flows (→ trackers → findings in later stages)."""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from traceaudit.capture import CaptureStats, open_capture
from traceaudit.capture.batch import DEFAULT_BATCH_ROWS
from traceaudit.capture.prefetch import read_ahead
from traceaudit.errors import CaptureError
from traceaudit.flows import FlowBuilder
from traceaudit.flows.columns import Columns
from traceaudit.tracking.excerpts import ExcerptRecorder, Excerpts
from traceaudit.tracking.timeline import corrected_events
from traceaudit.tracking.tracker import ConnectionTracker, Tracked, TrackerConfig
from traceaudit.tracking.zeek import (
    ZeekConfig,
    ZeekTracker,
    checksum_ok_frames,
    seg_flags_from_ok_frames,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ReadOptions:
    reader: str = "native"
    verify_checksums: bool = False
    batch_rows: int = DEFAULT_BATCH_ROWS
    tracker: TrackerConfig = TrackerConfig()
    zeek: ZeekConfig | None = ZeekConfig()      # None: no Zeek view (no conn_state/history)
    excerpts: bool = True                       # keep packets for ladder diagrams (HTML)
    read_ahead: bool = True                     # decode the next batches in a second thread
    frames_soon: bool = True                    # the caller will want DataFrames (import pandas
                                                # beside the end-of-capture kernels)


@dataclass
class CaptureAnalysis:
    """Everything learned from one capture file."""

    stats: CaptureStats
    table: Columns               # FLOW_COLUMNS + the tracking columns (connections.py)
    tracked: Tracked             # raw tracker facts per connection
    events: np.ndarray           # corrected transition events, sorted by conn/endpoint/time
    zeek_table: Columns | None = None       # Zeek's connections (tracking/zeek.py), if enabled
    excerpts: Excerpts | None = None        # a few packets per connection, for ladders

    def __post_init__(self) -> None:
        # callers holding DataFrames (tests, tools) may pass them as they are
        if not isinstance(self.table, Columns):
            self.table = Columns.of_frame(self.table)
        if self.zeek_table is not None and not isinstance(self.zeek_table, Columns):
            self.zeek_table = Columns.of_frame(self.zeek_table)

    @property
    def flows(self) -> pd.DataFrame:
        """The flow table as a DataFrame (made on first use: pandas is imported then)."""
        return self.table.frame()

    @property
    def zeek_rows(self) -> pd.DataFrame | None:
        return self.zeek_table.frame() if self.zeek_table is not None else None

    @property
    def failed(self) -> bool:
        return self.stats.error is not None


ProgressHook = Callable[[CaptureStats], None]


def analyze_capture(path: str | Path, options: ReadOptions = ReadOptions(),
                    progress: ProgressHook | None = None) -> CaptureAnalysis:
    """Read one capture: flow table, trackers, timelines. Never raises for a bad file: see
    ``stats.error`` (what was read before the damage is still analysed)."""
    # a Zeek view run without -C needs each segment's checksum verdict: the native reader marks
    # it per row (seg_flags); for other readers a verifying second read tells (stopgap)
    marks = options.zeek is not None and not options.zeek.ignore_checksums
    source = open_capture(path, reader=options.reader, verify_checksums=options.verify_checksums,
                          batch_rows=options.batch_rows, seg_flags=marks)
    builder = FlowBuilder()
    tracker = ConnectionTracker(options.tracker)
    excerpts = ExcerptRecorder() if options.excerpts else None
    zeek = ZeekTracker(options.zeek) if options.zeek is not None else None
    ok_frames = None
    if marks and not options.verify_checksums and options.reader != "native":
        ok_frames = checksum_ok_frames(path, reader=options.reader,
                                       batch_rows=options.batch_rows)
    # the built-in reader decodes ahead in its own thread (its kernels release the GIL); the
    # tshark reader drives an event loop of its own and stays in this one
    batches = (read_ahead(source.batches) if options.read_ahead and options.reader == "native"
               else source.batches())
    try:
        for batch in batches:
            assignment = builder.add(batch)
            tracker.add(batch, assignment, builder)
            if excerpts is not None:
                excerpts.add(batch, assignment, builder)
            if zeek is not None:
                seg = batch.columns.get("seg_flags")
                if ok_frames is not None:
                    marks = seg_flags_from_ok_frames(batch["frame"], ok_frames)
                    seg = marks if seg is None else (seg | marks)
                zeek.add(batch, assignment, builder, seg)
            if progress:
                progress(source.stats)
    except CaptureError as exc:
        source.stats.error = exc
    tracked = tracker.finish(builder.n_conns, source.stats.last_ts_ns)
    del tracker
    if options.frames_soon:
        # pandas' import (~0.2 s) runs in a thread beside the compiled end-of-capture work
        # below, which releases the GIL
        _import_in_background("pandas")
    events = corrected_events(tracked)
    # the raw events are not read again: free them now (8 bytes x 6 an event)
    tracked = replace(tracked, events=np.empty((0, tracked.events.shape[1]), np.int64))
    if zeek is not None:
        zeek.close()
    table = builder.columns(str(path))
    zres = zeek.finish(builder, table) if zeek is not None else None
    del zeek                              # working tables go as soon as they are done with
    kept = excerpts.finish(builder) if excerpts is not None else None
    del builder, excerpts
    from traceaudit.tracking.connections import add_tracking_columns
    flows = add_tracking_columns(table, tracked, events, zres)
    return CaptureAnalysis(source.stats, flows, tracked, events,
                           zres.row_columns if zres is not None else None, kept)


def _import_in_background(module: str) -> None:
    """Start importing ``module`` in a thread; whoever imports it later waits for that import
    to finish (Python's per-module import lock)."""
    if module in sys.modules:
        return

    def load() -> None:
        try:
            importlib.import_module(module)
        except Exception:              # the import where it is needed raises it properly
            pass

    threading.Thread(target=load, name=f"traceaudit-import-{module}", daemon=True).start()


def analyze_captures(paths: list[Path], options: ReadOptions = ReadOptions(),
                     progress: ProgressHook | None = None) -> Iterator[CaptureAnalysis]:
    """One analysis per file, in order; a bad file yields an analysis with ``stats.error``."""
    for path in paths:
        yield analyze_capture(path, options, progress)

