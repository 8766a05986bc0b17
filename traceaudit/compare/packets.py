"""One vantage point of a comparison: every TCP segment's identity fields and connection.

The capture is read through the ordinary reader (``capture.open_capture``) and its segments
assigned to connections by the flow table (``flows.FlowBuilder``), so connection ids are the
ones ``analyze`` and Wireshark's ``tcp.stream`` give. Only the columns a segment is recognised
by are kept (about 50 bytes a packet), in capture order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from traceaudit.capture import CaptureStats, open_capture
from traceaudit.flows.columns import Columns
from traceaudit.flows.table import FlowBuilder

#: Batch columns kept when the reader gives them: the IP ID pairs copies of one content
#: where the path evidently keeps it (``align``).
IF_READ = ("ip_id",)
#: Batch columns a segment is identified by (plus its frame and time).
KEPT = ("frame", "ts_ns", "seq", "ack", "flags", "win", "payload_len", "has_ts", "tsval",
        "tsecr")


@dataclass
class Vantage:
    """The packets of one capture: ``pk`` columns (``KEPT`` plus ``conn``, the connection id,
    and ``from_client``), one row per TCP segment in capture order; ``flows`` its flow table
    (``flows.FLOW_COLUMNS``)."""

    path: str
    stats: CaptureStats
    pk: dict[str, np.ndarray]
    flows: Columns
    #: per connection, its rows in ``pk`` (``order[start[c]:start[c + 1]]``, in capture order)
    order: np.ndarray = field(init=False)
    start: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n_conns = len(self.flows)
        self.order = np.argsort(self.pk["conn"], kind="stable")
        counts = np.bincount(self.pk["conn"], minlength=n_conns) if len(self.order) else \
            np.zeros(n_conns, np.int64)
        self.start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def rows_of(self, conn: int) -> np.ndarray:
        return self.order[self.start[conn]:self.start[conn + 1]]

    def endpoints(self, side: str) -> list[str]:
        """``ip:port`` (``[ip]:port`` for IPv6) of every connection's client or server."""
        col = self.flows.column(f"{side}_ip")
        labels = [f"[{x}]" if ":" in str(x) else str(x) for x in col.labels]
        return [f"{labels[c]}:{p}" for c, p in zip(col.codes.tolist(),
                                                   self.flows[f"{side}_port"].tolist())]


def read_vantage(path: str, *, reader: str = "native") -> Vantage:
    """Read ``path`` whole. A file that is not a capture raises ``CaptureError``; damage part
    way sets ``stats.error`` and keeps the packets before it (as ``analyze`` does)."""
    source = open_capture(path, reader=reader)
    builder = FlowBuilder()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in (*KEPT, "conn", "from_client")}
    for batch in source.batches():
        assigned = builder.add(batch)
        for name in IF_READ:
            if name in batch.columns:
                parts.setdefault(name, [])
        for name in parts:
            if name in batch.columns:
                parts[name].append(batch[name].copy())
        parts["conn"].append(assigned.conn.astype(np.int32))
        parts["from_client"].append(assigned.from_client)
    flows = builder.columns(str(path))
    del builder
    pk = {}
    for name in list(parts):            # one column at a time: its pieces go as it is made
        arrs = parts.pop(name)
        pk[name] = np.concatenate(arrs) if arrs else np.zeros(0, _DTYPES.get(name, np.int64))
        del arrs
    return Vantage(str(path), source.stats, pk, flows)


_DTYPES = {"conn": np.int32, "from_client": np.bool_, "has_ts": np.bool_, "seq": np.uint32,
           "ack": np.uint32, "flags": np.uint16, "win": np.uint16, "payload_len": np.int32, "tsval": np.uint32,
           "tsecr": np.uint32}
