"""Finished rows as fixed-width records: what retirement spills, and how they become the
flow table's columns again."""

from __future__ import annotations

import numpy as np

from traceaudit.flows.columns import Coded, Columns
from traceaudit.flows.table import RAW_FIELDS, flow_columns
from traceaudit.tracking import zeek_kernel as ZK
from traceaudit.tracking.connections import CODED_LABELS, tracking_columns
from traceaudit.tracking.tracker import Tracked
from traceaudit.tracking.zeek import history_codes

#: record fields holding codes into ``CODED_LABELS`` (states, close role and kind)
CODED = ("client_state", "server_state", "close_role", "close_kind")
_HIST_WORDS = ZK.HMAX // 8

#: One int64 per field; a record array is stored field by field (a row of ``Records.data``
#: a field), so that writing and reading a field touches contiguous memory.
FIELDS = [*RAW_FIELDS, *CODED, "midstream", "conn_state", "zeek_flipped",
          *(f"history{i}" for i in range(_HIST_WORDS))]
INDEX = {name: i for i, name in enumerate(FIELDS)}
_HIST = INDEX["history0"]


class Records:
    """k finished connections as a (len(FIELDS), k) int64 matrix; ``records[name]`` is a field."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    @classmethod
    def empty(cls, k: int = 0) -> "Records":
        return cls(np.zeros((len(FIELDS), k), np.int64))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[INDEX[name]]

    def __setitem__(self, name: str, values: np.ndarray) -> None:
        self.data[INDEX[name]] = values

    def __len__(self) -> int:
        return self.data.shape[1]

    def take(self, rows: np.ndarray | slice) -> "Records":
        return Records(self.data[:, rows])

    def history(self) -> np.ndarray:
        """(k, HMAX) uint8 letters, NUL-padded."""
        return np.ascontiguousarray(self.data[_HIST:_HIST + _HIST_WORDS].T).view(np.uint8)

    def set_history(self, letters: np.ndarray) -> None:
        self.data[_HIST:_HIST + _HIST_WORDS] = np.ascontiguousarray(letters).view(np.int64).T

    @staticmethod
    def concat(parts: list["Records"]) -> "Records":
        return Records(np.concatenate([p.data for p in parts], axis=1))


def make_records(raw: dict[str, np.ndarray], tracked: Tracked, events: np.ndarray,
                 zeek: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                 sort: bool = True) -> Records:
    """Records of k connections: ``raw`` flow fields, their tracker rows and corrected events
    (connection numbers 0..k-1), and the Zeek view ``(conn_state, history, flipped)``;
    sorted by first frame (rows in creation order already are) unless not ``sort``."""
    k = len(raw["first_frame"])
    rec = Records.empty(k)
    for name in RAW_FIELDS:
        rec[name] = raw[name]
    cols = tracking_columns(k, tracked, events, None)
    for name in CODED:
        rec[name] = cols[name].codes
    rec["midstream"] = cols["midstream"]
    if zeek is not None:
        rec["conn_state"], letters, rec["zeek_flipped"] = zeek
        rec.set_history(letters)
    first = rec["first_frame"]
    if sort and k > 1 and (first[1:] < first[:-1]).any():
        rec = rec.take(np.argsort(first, kind="stable"))
    return rec


def record_columns(rec: Records, capture: str, first_id: int, zeek: bool) -> Columns:
    """The flow table's columns (FLOW_COLUMNS + TRACKING_COLUMNS, as ``add_tracking_columns``
    orders them) of records, ids counted from ``first_id``."""
    cols = flow_columns(rec, capture, first_id)
    for name in CODED:
        cols[name] = Coded(rec[name], CODED_LABELS[name])
    cols["midstream"] = rec["midstream"] == 1
    if zeek:
        cols["conn_state"] = Coded(rec["conn_state"], CODED_LABELS["conn_state"])
        cols["history"] = history_codes(rec.history())
        cols["zeek_flipped"] = rec["zeek_flipped"] == 1
    return cols
