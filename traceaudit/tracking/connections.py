"""Tracking columns added to the flow table: final states, close role and kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from traceaudit.tracking import kernel as K
from traceaudit.tracking.classify import close_kinds, close_roles
from traceaudit.tracking.states import EndpointState
from traceaudit.tracking.timeline import final_states
from traceaudit.tracking.tracker import Tracked
from traceaudit.tracking.zeek import ZeekResult

if TYPE_CHECKING:
    import pandas as pd

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

_STATE_NAMES = np.array([s.name for s in sorted(EndpointState, key=int)], dtype=object)


def state_names(values: np.ndarray) -> np.ndarray:
    return _STATE_NAMES[values + 1]          # UNSEEN is -1


def add_tracking_columns(flows: pd.DataFrame, tracked: Tracked, events: np.ndarray,
                         zeek: ZeekResult | None = None) -> pd.DataFrame:
    n = len(flows)
    final = final_states(events, n)
    trk = tracked.trk[:n]
    flows["client_state"] = state_names(final[:, 0])
    flows["server_state"] = state_names(final[:, 1])
    flows["close_role"] = close_roles(trk)
    flows["close_kind"] = close_kinds(trk)
    flows["midstream"] = trk[:, K.K_MIDSTREAM] == 1
    if zeek is not None:
        flows["conn_state"] = zeek.conn_state[:n]
        flows["history"] = zeek.history[:n]
        flows["zeek_flipped"] = zeek.flipped[:n]
    return flows
