"""Where the stages meet: captures → batches → flows (→ trackers → findings in later stages)."""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from traceaudit import stopping
from traceaudit.capture import CaptureSet, CaptureStats, open_capture
from traceaudit.capture.batch import DEFAULT_BATCH_ROWS, PacketBatch
from traceaudit.capture.prefetch import read_ahead
from traceaudit.errors import CaptureError, capture_failure
from traceaudit.flows import FlowBuilder
from traceaudit.flows.table import Assignment
from traceaudit.flows.columns import Columns
from traceaudit.retire import RetireOptions
from traceaudit.tracking.excerpts import ExcerptRecorder, Excerpts
from traceaudit.tracking.facts import conn_table, endpoint_table
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

    from traceaudit.report.json_pieces import RenderedJson
    from traceaudit.retire.excerpt_spill import SpilledExcerpts
    from traceaudit.retire.spill import SpilledTable


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
    retire: RetireOptions | None = None         # flow table only, finished connections retired
                                                # to a spill file while reading (memory flat)


@dataclass
class CaptureAnalysis:
    """Everything learned from one capture file."""

    stats: CaptureStats
    table: Columns | SpilledTable   # FLOW_COLUMNS + the tracking columns (connections.py);
                                    # a SpilledTable from a retiring read
    tracked: Tracked             # raw tracker facts per connection
    events: np.ndarray           # corrected transition events, sorted by conn/endpoint/time
    zeek_table: Columns | None = None       # Zeek's connections (tracking/zeek.py), if enabled
    excerpts: Excerpts | SpilledExcerpts | None = None   # a few packets per connection, for
                                                         # ladders (a flat read: on disk)
    rst_origins: np.ndarray | None = None   # who sent each endpoint's first RST
                                            # (tracking/rst_origin.py), kept by audit.slimmed
    json_text: RenderedJson | None = None   # its part of the JSON report, rendered where it
                                            # was read (report/json_pieces.py)

    def __post_init__(self) -> None:
        # callers holding DataFrames (tests, tools) may pass them as they are
        if not isinstance(self.table, Columns) and not hasattr(self.table, "chunks"):
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
        """The capture is damaged or could not be read: ``stats.error`` says why."""
        return self.stats.error is not None

    @property
    def read(self) -> bool:
        """Something of the capture was read. False when it could not be opened or is not a
        capture at all: then it has no packet counts, and no rule ran on it."""
        st = self.stats
        return st.error is None or st.packets > 0 or st.first_ts_ns is not None


ProgressHook = Callable[[CaptureStats], None]


def analyze_capture(path: str | Path | CaptureSet, options: ReadOptions = ReadOptions(),
                    progress: ProgressHook | None = None) -> CaptureAnalysis:
    """Read one capture: flow table, trackers, timelines. Never raises for a bad file: see
    ``stats.error`` (what was read before the damage is still analysed). A ``CaptureSet``
    is read as one timeline (``stats.parts``), possibly only its first files: see
    ``analyze_captures``."""
    files = path.files if isinstance(path, CaptureSet) else (path,)
    if options.retire is not None and all(Path(f).is_file() for f in files) and \
            sum(Path(f).stat().st_size for f in files) >= options.retire.min_bytes:
        # (a pipe or device could not be read a second time for the repair: kept whole)
        return _retiring_read(path, options, progress)
    stages = _Stages(path, options)
    _read(stages, progress)
    return _finished(path, options, stages.source.stats, stages)


def _read(stages: _Stages, progress: ProgressHook | None) -> None:
    """Every batch of the capture through ``stages``; damage is noted in the stats."""
    source = stages.source
    batches = stages.batches()
    try:
        for batch in batches:
            stopping.check()
            stages.add(batch)
            if progress:
                progress(source.stats)
    except CaptureError as exc:
        source.stats.error = exc
    finally:
        batches.close()                 # on any exception too: stops the read-ahead thread


def _finished(path: str | Path, options: ReadOptions, stats: CaptureStats,
              stages: _Stages) -> CaptureAnalysis:
    """The analysis once every batch went through ``stages``: trackers finished, timelines
    corrected, the Zeek view and the flow table made."""
    builder, tracker, excerpts, zeek = stages.release()
    tracked = tracker.finish(builder.n_conns, stats.last_ts_ns)
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
    return CaptureAnalysis(stats, flows, tracked, events,
                           zres.row_columns if zres is not None else None, kept)


def failed_analysis(path: str | Path, error: CaptureError,
                    options: ReadOptions = ReadOptions()) -> CaptureAnalysis:
    """The analysis of a capture of which nothing is kept (``error`` says why): no packet, no
    connection, every table empty but of its full layout, as for a file that is not a
    capture."""
    stats = CaptureStats(path=str(path), error=error)
    return _finished(path, options, stats, _Stages(path, options, excerpts=False, source=False))


class _Stages:
    """One read of a capture through the streaming stages (flows, trackers, Zeek view,
    excerpts), batch by batch."""

    def __init__(self, path: str | Path, options: ReadOptions, excerpts: bool | None = None,
                 source: bool = True):
        # a Zeek view run without -C needs each segment's checksum verdict: the native reader
        # marks it per row (seg_flags); for other readers a verifying second read tells
        self.options = options
        self.marks = options.zeek is not None and not options.zeek.ignore_checksums
        if source:
            self.source = open_capture(path, reader=options.reader,
                                       verify_checksums=options.verify_checksums,
                                       batch_rows=options.batch_rows, seg_flags=self.marks)
        self.builder = FlowBuilder()
        self.tracker = ConnectionTracker(options.tracker)
        keep = options.excerpts if excerpts is None else excerpts
        self.excerpts = ExcerptRecorder() if keep else None
        self.zeek = ZeekTracker(options.zeek) if options.zeek is not None else None
        self.ok_frames = None
        if source and self.marks and not options.verify_checksums and options.reader != "native":
            self.ok_frames = checksum_ok_frames(path, reader=options.reader,
                                                batch_rows=options.batch_rows)

    def release(self) -> tuple:
        """(builder, tracker, excerpts, zeek), no longer held here: each is freed as soon as
        its holder is done with it."""
        parts = self.builder, self.tracker, self.excerpts, self.zeek
        self.builder = self.tracker = self.excerpts = self.zeek = None
        return parts

    def batches(self) -> Iterator[PacketBatch]:
        # the built-in reader decodes ahead in its own thread (its kernels release the GIL); the
        # tshark reader drives an event loop of its own and stays in this one
        if self.options.read_ahead and self.options.reader == "native":
            return read_ahead(self.source.batches)
        return self.source.batches()

    def add(self, batch: PacketBatch, clock: tuple[int, int] | None = None) -> Assignment:
        """``clock``: see ``ZeekTracker.add`` (a batch of one share of the capture)."""
        assignment = self.builder.add(batch)
        self.tracker.add(batch, assignment, self.builder)
        if self.excerpts is not None:
            self.excerpts.add(batch, assignment, self.builder)
        if self.zeek is not None:
            seg = batch.columns.get("seg_flags")
            if self.ok_frames is not None:
                marks = seg_flags_from_ok_frames(batch["frame"], self.ok_frames)
                seg = marks if seg is None else (seg | marks)
            self.zeek.add(batch, assignment, self.builder, seg, clock)
        return assignment


def _retiring_read(path: str | Path, options: ReadOptions,
                   progress: ProgressHook | None) -> CaptureAnalysis:
    """``analyze_capture`` for the flow table alone, with finished connections retired to a
    spill file as the read goes (``traceaudit.retire``)."""
    from traceaudit.retire.spill import SpilledTable
    from traceaudit.retire.sweep import Retirer, TupleSet, finish_live
    # (packet excerpts only for analyze's flat read with --html: ``retire/excerpt_spill.py``)
    stages = _Stages(path, options, excerpts=options.excerpts and options.retire.facts)
    source = stages.source
    spill = SpilledTable(str(path), zeek=options.zeek is not None,
                         with_facts=options.retire.facts)
    retirer = Retirer(spill, options.retire)
    if stages.excerpts is not None:
        from traceaudit.retire.excerpt_spill import ExcerptRetirer
        retirer.excerpts = ExcerptRetirer(stages.excerpts)
    last_frame = 0
    batches = stages.batches()
    try:
        for batch in batches:
            stopping.check()
            slots, conns = stages.builder.n_slots, stages.builder.n_conns
            assignment = stages.add(batch)
            retirer.after_batch(batch, assignment, stages.builder, slots, conns,
                                stages.tracker, stages.zeek)
            if len(batch):
                last_frame = int(batch["frame"][-1])
            if progress:
                progress(source.stats)
    except CaptureError as exc:
        source.stats.error = exc
    finally:
        batches.close()
    end_ts = source.stats.last_ts_ns or 0
    finish_live(retirer, stages.builder, stages.tracker, stages.zeek, end_ts)
    if retirer.excerpts is not None:
        retirer.excerpts.finish(stages.builder)
    del stages
    if retirer.suspects:
        _repair(path, options, retirer, TupleSet(np.concatenate(retirer.suspects)), last_frame,
                end_ts)
    tracked = Tracked(endpoint_table(0), conn_table(0), np.empty((0, 6), np.int64), end_ts,
                      options.tracker)
    return CaptureAnalysis(source.stats, spill, tracked, np.empty((0, 6), np.int64),
                           excerpts=retirer.excerpts.spilled if retirer.excerpts else None)


def _repair(path: str | Path, options: ReadOptions, retirer, tuples, last_frame: int,
            end_ts: int) -> None:
    """Read the capture again for the 4-tuples that came back after retiring, without
    retiring; their rows replace the first read's."""
    from traceaudit.retire.sweep import finish_live
    stages = _Stages(path, options, excerpts=retirer.excerpts is not None)
    try:
        for batch in stages.batches():
            rows = tuples.batch_rows(batch) & (batch["frame"] <= last_frame)
            if rows.any():
                stages.add(PacketBatch({k: v[rows] for k, v in batch.columns.items()}))
            if len(batch) and batch["frame"][-1] >= last_frame:
                break
    except CaptureError:
        pass                                # the same damage as the first read: same packets
    retirer.spill.drop_first_read(tuples.record_rows)
    finish_live(retirer, stages.builder, stages.tracker, stages.zeek, end_ts, repair=True)
    if retirer.excerpts is not None:        # (written after the first read's: these win)
        retirer.excerpts.finish(stages.builder, stages.excerpts)


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


def analyze_captures(paths: list[Path | CaptureSet], options: ReadOptions = ReadOptions(),
                     progress: ProgressHook | None = None) -> Iterator[CaptureAnalysis]:
    """One analysis per file or rotated set (``capture.group_captures``), in order; a bad
    file yields an analysis with ``stats.error``. A set whose next file starts before the
    previous one ends stops there (a warning says so): the files left are read after it.

    Each capture is a unit: an unexpected exception while analysing one (a bug) yields a
    ``failed_analysis`` whose error names it (``errors.capture_failure``: a bug, or a full
    disk), and the next is read."""
    from traceaudit.capture.chain import remainder
    for path in paths:
        while path is not None:
            try:
                analysis = analyze_capture(path, options, progress)
            except CaptureError as exc:    # the reader could not even start (tshark missing)
                analysis = failed_analysis(path, exc, options)
            except Exception as exc:
                analysis = failed_analysis(path, capture_failure(str(path), exc), options)
            yield analysis
            path = remainder(path, analysis.stats) if isinstance(path, CaptureSet) else None

