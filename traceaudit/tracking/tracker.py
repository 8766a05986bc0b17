"""The tracker stage: runs the compiled endpoint trackers batch by batch beside the flow builder."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traceaudit.capture.batch import PacketBatch
from traceaudit.flows import assign as A
from traceaudit.flows.table import Assignment, FlowBuilder
from traceaudit.tracking import kernel as K
from traceaudit.tracking.facts import conn_table, endpoint_table
# Event matrix columns (EV_CONN … EV_REASON), declared once in events.pxd for the compiled core.
from traceaudit.tracking.events import (EV_CONN, EV_ENDPOINT, EV_FRAME,  # noqa: F401
                                        EV_REASON, EV_STATE, EV_TS)

#: First sizes of the growing tables (events; connections below): at least 4 MB each, the size
#: from which NumPy asks for huge pages (fewer page faults; untouched pages cost nothing).
EVENT_BUFFER_ROWS = 1 << 17


@dataclass(frozen=True)
class TrackerConfig:
    """Timers the passive trackers cannot see in the capture."""

    msl2_s: float = 60.0          # TIME_WAIT length (2×MSL); Linux: 60 s
    fin_timeout_s: float = 60.0   # orphaned FIN_WAIT_2 lifetime; Linux tcp_fin_timeout default


@dataclass
class Tracked:
    """Raw tracker output for one capture: per-connection facts and the transition events."""

    endpoints: np.ndarray      # (connections, 2) ENDPOINT_FACTS: [:, 0] client, [:, 1] server
    conns: np.ndarray          # (connections,) CONN_FACTS (facts.pxd names every field)
    events: np.ndarray         # (n, 6) int64: conn, endpoint, ts_ns, frame, state, reason
                               # (the pipeline empties it once the timelines are corrected)
    end_ts_ns: int
    config: TrackerConfig


class ConnectionTracker:
    """Feeds each batch, after flow assignment, through ``kernel.track_batch``."""

    def __init__(self, config: TrackerConfig = TrackerConfig(), initial: int = 1 << 13) -> None:
        self.config = config
        self.msl2 = int(config.msl2_s * 1e9)
        self.fin_timeout = int(config.fin_timeout_s * 1e9)
        self.ends = endpoint_table(initial)         # the facts (facts.pxd), one row a
        self.conns = conn_table(initial)            # connection
        # the kernel appends events here directly; it grows 8x (untouched zero pages are not
        # resident) and ``finish`` hands out its filled rows without a copy
        self._ev = np.zeros((EVENT_BUFFER_ROWS, 6), np.int64)
        self._n_ev = 0

    def _grow_events(self, rows: int) -> None:
        grown = np.zeros((max(rows, 8 * len(self._ev)), 6), np.int64)
        grown[:self._n_ev] = self._ev[:self._n_ev]
        self._ev = grown

    def add(self, batch: PacketBatch, assignment: Assignment, flows: FlowBuilder) -> None:
        if flows.n_conns > len(self.conns):
            # 8x: the untouched tail of np.zeros costs no resident memory, and the copies of
            # what was filled so far stay a fraction of the final table
            rows = max(flows.n_conns, 8 * len(self.conns))
            ends, conns = endpoint_table(rows), conn_table(rows)
            ends[:len(self.ends)] = self.ends
            conns[:len(self.conns)] = self.conns
            self.ends, self.conns = ends, conns
        b = batch.columns
        row = 0
        while row < len(batch):
            self._n_ev, row = K.track_batch(
                assignment.conn, assignment.from_client, b["flags"], b["seq"], b["ack"],
                b["payload_len"], b["win"], b["app_marks"], b["ttl"], b["ip_id"],
                b["has_ts"].view(np.uint8), b["tsval"],
                b["ts_ns"], b["frame"],
                flows.conn[:, A.F_PREV],
                self.ends, self.conns, self._ev, self._n_ev, self.msl2, self.fin_timeout, row)
            if row < len(batch):
                self._grow_events(self._n_ev + K.EV_HEADROOM + 1)

    def reserve_events(self, rows: int) -> None:
        """Room for ``rows`` more events (expiring TIME_WAITs: at most 2 a connection)."""
        if self._n_ev + rows > len(self._ev):
            self._grow_events(self._n_ev + rows)

    def events(self) -> np.ndarray:
        """The raw events so far (a view of the buffer)."""
        return self._ev[:self._n_ev]

    def keep_events(self, kept: np.ndarray) -> None:
        """Replace the buffered events by ``kept`` (fewer rows than now)."""
        self._ev[:len(kept)] = kept
        self._n_ev = len(kept)

    def finish(self, n_conns: int, end_ts_ns: int | None) -> Tracked:
        ends, conns = self.ends[:n_conns], self.conns[:n_conns]
        end = end_ts_ns or 0
        self.reserve_events(2 * n_conns + 1)
        self._n_ev = K.finish(ends, conns, self._ev, self._n_ev, n_conns, end, self.msl2)
        return Tracked(ends, conns, self.events(), end, self.config)
