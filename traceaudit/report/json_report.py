"""JSON report (pure: analyses in, text out).

FORMAT_VERSION history:
  1: captures, connections (with both endpoints' final_state and timeline); findings list.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import orjson

from traceaudit.pipeline import CaptureAnalysis
from traceaudit.tracking.connections import state_names
from traceaudit.tracking.states import REASON_TEXT, Reason
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE, EV_TS

FORMAT_VERSION = 1

_REASONS = {int(r): REASON_TEXT[r] for r in Reason}
_CONN_FIELDS = ["id", "client_ip", "client_port", "server_ip", "server_port", "ip_version",
                "start_ts", "end_ts", "first_frame", "last_frame", "client_packets",
                "server_packets", "client_bytes", "server_bytes", "client_payload",
                "server_payload", "orientation_guessed", "tunneled", "midstream", "close_role",
                "close_kind", "conn_state", "history", "zeek_flipped"]


def capture_entry(a: CaptureAnalysis) -> dict:
    st = a.stats
    return {
        "path": st.path,
        "format": st.format,
        "link_types": list(st.link_types),
        "packets": st.packets,
        "tcp_packets": st.tcp_packets,
        "connections": len(a.flows),
        "first_ts": None if st.first_ts_ns is None else st.first_ts_ns / 1e9,
        "last_ts": None if st.last_ts_ns is None else st.last_ts_ns / 1e9,
        "warnings": list(st.warnings),
        "error": None if st.error is None else str(st.error),
    }


def connection_entries(a: CaptureAnalysis) -> list[dict]:
    """One dict per connection, with both endpoints' timelines (plain Python values only)."""
    flows = a.flows
    if flows.empty:
        return []
    fields = [f for f in _CONN_FIELDS if f in flows.columns]
    columns = [flows[f].tolist() for f in fields]
    timelines = _timelines(a.events, len(flows))
    finals = {"client": flows["client_state"].tolist(), "server": flows["server_state"].tolist()}
    out = []
    capture = a.stats.path
    for i, values in enumerate(zip(*columns)):
        entry = dict(zip(fields, values))
        entry["capture"] = capture
        entry["client"] = {"final_state": finals["client"][i], "timeline": timelines[i][0]}
        entry["server"] = {"final_state": finals["server"][i], "timeline": timelines[i][1]}
        out.append(entry)
    return out


_EMPTY = orjson.Fragment(b"[]")


def _timelines(events: np.ndarray, n: int) -> list[list]:
    """Per connection, [client, server] timelines as pre-serialised JSON arrays.

    Events arrive sorted by (connection, endpoint, time); each entry is written once as text
    and the group is handed to orjson as a Fragment (no dict per event: 850k events for 100k
    connections otherwise dominate the report time).
    """
    result = [[_EMPTY, _EMPTY] for _ in range(n)]
    if not len(events):
        return result
    names = state_names(events[:, EV_STATE]).tolist()
    whys = [orjson.dumps(_REASONS.get(w, "")).decode() for w in events[:, EV_REASON].tolist()]
    items = [f'{{"ts":{t!r},"frame":{fr if fr >= 0 else "null"},"state":"{st}","why":{why}}}'
             for t, fr, st, why in zip((events[:, EV_TS] / 1e9).tolist(),
                                       events[:, EV_FRAME].tolist(), names, whys)]
    group = events[:, EV_CONN] * 2 + events[:, EV_ENDPOINT]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]).tolist()
    ends = starts[1:] + [len(items)]
    for g, a, b in zip(group[starts].tolist(), starts, ends):
        result[g >> 1][g & 1] = orjson.Fragment(("[" + ",".join(items[a:b]) + "]").encode())
    return result


def render(analyses: Iterable[CaptureAnalysis], findings: list[dict] | None = None,
           *, tool_version: str, generated_at: str | None = None) -> bytes:
    analyses = list(analyses)
    doc = {
        "format": FORMAT_VERSION,
        "tool": {"name": "traceaudit", "version": tool_version},
        "generated_at": generated_at,
        "captures": [capture_entry(a) for a in analyses],
        "connections": [c for a in analyses for c in connection_entries(a)],
        "findings": findings or [],
    }
    return orjson.dumps(doc) + b"\n"
