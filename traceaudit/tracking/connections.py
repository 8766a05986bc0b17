"""Tracking columns added to the flow table: final states, close role and kind."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

from traceaudit.flows.columns import Coded, Columns
from traceaudit.tracking.classify import (KIND_LABELS, ROLE_LABELS, close_kind_codes,
                                          close_role_codes)
from traceaudit.tracking.states import EndpointState
from traceaudit.tracking.timeline import final_states
from traceaudit.tracking.tracker import Tracked
from traceaudit.tracking.zeek import CONN_STATE_LABELS, ZeekResult

if TYPE_CHECKING:
    import pandas as pd

    FlowTable = TypeVar("FlowTable", pd.DataFrame, Columns)

#: Columns the tracking stage adds to FLOW_COLUMNS.
TRACKING_COLUMNS: dict[str, str] = {
    "client_state": "the client's RFC 9293 state at capture end (TIME_WAIT that outlived 2×MSL "
                    "before the capture ended is CLOSED)",
    "server_state": "the server's state at capture end (UNSEEN: it never took part)",
    "close_role": "who sent the first FIN or RST: client, server, simultaneous, none",
    "close_kind": "graceful, half_closed, reset, refused or open",
    "midstream": "True when the capture starts after the handshake (states inferred)",
    "conn_state": "Zeek's conn_state code for the connection (S0 S1 SF REJ S2 S3 RSTO RSTR RSTOS0 "
                  "RSTRH SH SHR OTH), as Zeek computes it for the Zeek connection holding this "
                  "connection's last packet (docs/zeek-compat.md)",
    "history": "Zeek's history string for that Zeek connection (upper case = Zeek's originator, "
               "see zeek_flipped; empty where Zeek logs '-')",
    "zeek_flipped": "True when Zeek's originator is this row's server (its history letters are "
                    "then upper case for the server)",
}

STATE_NAMES = np.array([s.name for s in sorted(EndpointState, key=int)], dtype=object)


#: Labels of the tracking columns kept as codes (``Coded``) until strings are asked for.
CODED_LABELS: dict[str, np.ndarray] = {
    "client_state": STATE_NAMES, "server_state": STATE_NAMES,
    "close_role": ROLE_LABELS, "close_kind": KIND_LABELS, "conn_state": CONN_STATE_LABELS,
}


def state_names(values: np.ndarray) -> np.ndarray:
    return STATE_NAMES[values + 1]          # UNSEEN is -1


def add_tracking_columns(flows: FlowTable, tracked: Tracked, events: np.ndarray,
                         zeek: ZeekResult | None = None) -> FlowTable:
    """Add ``TRACKING_COLUMNS`` to a flow table (a DataFrame or ``Columns``); returns it."""
    coded = isinstance(flows, Columns)       # a DataFrame takes plain object columns
    for name, values in tracking_columns(len(flows), tracked, events, zeek).items():
        flows[name] = values if coded or not isinstance(values, Coded) else values.values()
    return flows


def tracking_columns(n: int, tracked: Tracked, events: np.ndarray,
                     zeek: ZeekResult | None = None) -> dict[str, np.ndarray | Coded]:
    """``TRACKING_COLUMNS`` for the first ``n`` connections; few-valued string columns coded."""
    final = final_states(events, n)
    ends, conns = tracked.endpoints[:n], tracked.conns[:n]
    cols: dict[str, np.ndarray | Coded] = {
        "client_state": Coded(final[:, 0] + 1, CODED_LABELS["client_state"]),  # UNSEEN -1
        "server_state": Coded(final[:, 1] + 1, CODED_LABELS["server_state"]),
        "close_role": Coded(close_role_codes(conns), CODED_LABELS["close_role"]),
        "close_kind": Coded(close_kind_codes(ends, conns), CODED_LABELS["close_kind"]),
        "midstream": conns["midstream"] == 1,
    }
    if zeek is not None:
        cols["conn_state"] = Coded(zeek.conn_state_code[:n], CODED_LABELS["conn_state"])
        cols["history"] = Coded(zeek.history.codes[:n], zeek.history.labels)
        cols["zeek_flipped"] = zeek.flipped[:n]
    return cols
