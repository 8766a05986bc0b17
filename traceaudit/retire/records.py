"""Finished rows as fixed-width records: what retirement spills, and how they become the
flow table's columns again."""

from __future__ import annotations

import numpy as np

from traceaudit.flows.columns import Coded, Columns
from traceaudit.flows.table import RAW_FIELDS, flow_columns
from traceaudit.tracking import zeek_kernel as ZK
from traceaudit.tracking.classify import KIND_LABELS, ROLE_LABELS
from traceaudit.tracking.connections import STATE_NAMES, tracking_columns
from traceaudit.tracking.tracker import Tracked
from traceaudit.tracking.zeek import CONN_STATE_LABELS, history_strings

_CODED = ("client_state", "server_state", "close_role", "close_kind")

RECORD = np.dtype([(name, np.int64) for name in RAW_FIELDS]
                  + [(name, np.int8) for name in _CODED]
                  + [("midstream", np.bool_), ("conn_state", np.int8),
                     ("zeek_flipped", np.bool_), ("history", np.uint8, (ZK.HMAX,))])


def make_records(raw: dict[str, np.ndarray], tracked: Tracked, events: np.ndarray,
                 zeek: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Records of k connections: ``raw`` flow fields, their tracker rows and corrected events
    (connection numbers 0..k-1), and the Zeek view ``(conn_state, history, flipped)``;
    sorted by first frame (rows in creation order already are)."""
    k = len(raw["first_frame"])
    rec = np.zeros(k, RECORD)
    for name in RAW_FIELDS:
        rec[name] = raw[name]
    cols = tracking_columns(k, tracked, events, None)
    for name in _CODED:
        rec[name] = cols[name].codes
    rec["midstream"] = cols["midstream"]
    if zeek is not None:
        rec["conn_state"], rec["history"], rec["zeek_flipped"] = zeek
    first = rec["first_frame"]
    if len(first) > 1 and (first[1:] < first[:-1]).any():
        rec = rec[np.argsort(first, kind="stable")]
    return rec


def record_columns(rec: np.ndarray, capture: str, first_id: int, zeek: bool) -> Columns:
    """The flow table's columns (FLOW_COLUMNS + TRACKING_COLUMNS, as ``add_tracking_columns``
    orders them) of records, ids counted from ``first_id``."""
    cols = flow_columns(rec, capture, first_id)
    labels = {"client_state": STATE_NAMES, "server_state": STATE_NAMES,
              "close_role": ROLE_LABELS, "close_kind": KIND_LABELS}
    for name in _CODED:
        cols[name] = Coded(rec[name], labels[name])
    cols["midstream"] = rec["midstream"].copy()
    if zeek:
        cols["conn_state"] = Coded(rec["conn_state"], CONN_STATE_LABELS)
        cols["history"] = history_strings(rec["history"])
        cols["zeek_flipped"] = rec["zeek_flipped"].copy()
    return cols
