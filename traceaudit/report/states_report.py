"""`traceaudit states --at`: every endpoint's state at one moment (pure: analysis in, text out)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import numpy as np

from traceaudit.names import display_name
from traceaudit.pipeline import CaptureAnalysis
from traceaudit.report.facts_text import duration
from traceaudit.tracking.connections import state_names
from traceaudit.tracking.states import EndpointState
from traceaudit.tracking.timeline import states_at
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_STATE, EV_TS

HIDDEN = {"UNSEEN", "CLOSED"}


def render(analysis: CaptureAnalysis, ts_ns: int, show_all: bool = False,
           msl2_ns: int = 60 * 10**9) -> str:
    """``msl2_ns``: the TIME_WAIT length, to expire TIME_WAITs at a moment after the capture."""
    flows = analysis.flows
    at = states_at(analysis.events, len(flows), ts_ns)
    when = datetime.fromtimestamp(ts_ns / 1e9, timezone.utc).isoformat(timespec="microseconds")
    start = analysis.stats.first_ts_ns or ts_ns
    name = display_name(analysis.stats.path)
    lines = [f"{name} at {when} ({(ts_ns - start) / 1e9:+.6f} s from the first "
             f"packet)"]
    first, last = analysis.stats.first_ts_ns, analysis.stats.last_ts_ns
    if last is not None and ts_ns > last:
        expired = _expire_time_waits(analysis.events, at, ts_ns, msl2_ns)
        lines.append(f"note: the capture ended at {_iso(last)} (T is "
                     f"{duration((ts_ns - last) / 1e9)} after its last packet): states as they "
                     f"were left, TIME_WAITs expired by then ({expired} expired, 2×MSL = "
                     f"{duration(msl2_ns / 1e9)}); nothing later was captured")
    elif first is not None and ts_ns < first:
        lines.append(f"note: the capture began at {_iso(first)} (T is "
                     f"{duration((first - ts_ns) / 1e9)} before its first packet): no "
                     f"connection had been seen yet")
    rows = []
    census: Counter[str] = Counter()
    names = [state_names(at[:, 0]).tolist(), state_names(at[:, 1]).tolist()]
    for i, row in enumerate(flows.itertuples(index=False)):
        for e, side in enumerate(("client", "server")):
            state = names[e][i]
            if state == "UNSEEN" or (state == "CLOSED" and not show_all):
                continue
            census[state] += 1
            local = _ep(row.client_ip, row.client_port) if e == 0 else _ep(row.server_ip,
                                                                          row.server_port)
            peer = _ep(row.server_ip, row.server_port) if e == 0 else _ep(row.client_ip,
                                                                         row.client_port)
            rows.append((state, local, peer, side, str(row.id)))
    if not rows:
        lines.append("no endpoint holds connection state at that moment")
        return "\n".join(lines) + "\n"
    header = ("State", "Local Address:Port", "Peer Address:Port", "Role", "Conn")
    widths = [max(len(r[k]) for r in rows + [header]) for k in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*header))
    lines.extend(fmt.format(*r) for r in rows)
    lines.append("census: " + ", ".join(f"{s} {n}" for s, n in sorted(census.items())))
    return "\n".join(lines) + "\n"


def _expire_time_waits(events: np.ndarray, at: np.ndarray, ts_ns: int, msl2_ns: int) -> int:
    """Endpoints of ``at`` still in TIME_WAIT whose 2×MSL has passed by ``ts_ns`` become
    CLOSED (in place); returns how many."""
    tw = int(EndpointState.TIME_WAIT)
    ev = events[(events[:, EV_TS] <= ts_ns) & (events[:, EV_STATE] == tw)]
    if not len(ev):
        return 0
    entered = np.full(at.shape, -1, np.int64)
    # rows are sorted by (conn, endpoint, time): the last TIME_WAIT entry of each endpoint wins
    entered[ev[:, EV_CONN], ev[:, EV_ENDPOINT]] = ev[:, EV_TS]
    gone = (at == tw) & (entered >= 0) & (entered + msl2_ns <= ts_ns)
    at[gone] = int(EndpointState.CLOSED)
    return int(gone.sum())


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="microseconds")


def _ep(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
