"""`traceaudit states --at`: every endpoint's state at one moment (pure: analysis in, text out)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Iterator

import numpy as np

from traceaudit.names import display_name
from traceaudit.pipeline import CaptureAnalysis
from traceaudit.report.facts_text import duration
from traceaudit.retire import flat
from traceaudit.tracking.connections import state_names
from traceaudit.tracking.states import EndpointState
from traceaudit.tracking.timeline import states_at
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_STATE, EV_TS

HIDDEN = {"UNSEEN", "CLOSED"}


def render(analysis: CaptureAnalysis, ts_ns: int, show_all: bool = False,
           msl2_ns: int = 60 * 10**9) -> str:
    """The whole text (``pieces`` joined)."""
    return "".join(pieces(analysis, ts_ns, show_all, msl2_ns))


def pieces(analysis: CaptureAnalysis, ts_ns: int, show_all: bool = False,
           msl2_ns: int = 60 * 10**9) -> Iterator[str]:
    """The text a line at a time. ``msl2_ns``: the TIME_WAIT length, to expire TIME_WAITs at
    a moment after the capture. A flat read (connections on disk) is read twice, a chunk at
    a time: once for the column widths, the census and the expired count, once for the
    rows; nothing grows with the capture but the counts."""
    after_end = analysis.stats.last_ts_ns is not None and ts_ns > analysis.stats.last_ts_ns
    kept = None if flat.is_flat(analysis) else []   # a whole read: its rows made once
    widths = [len(h) for h in HEADER]
    census: Counter[str] = Counter()
    expired = 0
    for chunk in flat.parts(analysis, facts=False):
        at, n_expired = _states(chunk, ts_ns, after_end, msl2_ns)
        expired += n_expired
        rows = _rows(chunk, at, show_all)
        for r in rows:
            census[r[0]] += 1
        widths = [max(w, *(len(r[k]) for r in rows)) if rows else w
                  for k, w in enumerate(widths)]
        if kept is not None:
            kept.extend(rows)
    yield from _head(analysis, ts_ns, expired, msl2_ns)
    if not census:
        yield "no endpoint holds connection state at that moment\n"
        return
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "\n"
    yield fmt.format(*HEADER)
    if kept is not None:
        yield from (fmt.format(*r) for r in kept)
    else:
        for chunk in flat.parts(analysis, facts=False):
            at, _ = _states(chunk, ts_ns, after_end, msl2_ns)
            yield from (fmt.format(*r) for r in _rows(chunk, at, show_all))
    yield "census: " + ", ".join(f"{s} {n}" for s, n in sorted(census.items())) + "\n"


HEADER = ("State", "Local Address:Port", "Peer Address:Port", "Role", "Conn")


def _states(chunk: CaptureAnalysis, ts_ns: int, after_end: bool,
            msl2_ns: int) -> tuple[np.ndarray, int]:
    """Each endpoint's state at ``ts_ns`` (after the capture: TIME_WAITs expired), and how
    many were expired."""
    at = states_at(chunk.events, len(chunk.table), ts_ns)
    return at, _expire_time_waits(chunk.events, at, ts_ns, msl2_ns) if after_end else 0


def _head(analysis: CaptureAnalysis, ts_ns: int, expired: int,
          msl2_ns: int) -> Iterator[str]:
    when = datetime.fromtimestamp(ts_ns / 1e9, timezone.utc).isoformat(timespec="microseconds")
    start = analysis.stats.first_ts_ns or ts_ns
    name = display_name(analysis.stats.path)
    yield (f"{name} at {when} ({(ts_ns - start) / 1e9:+.6f} s from the first "
           f"packet)\n")
    first, last = analysis.stats.first_ts_ns, analysis.stats.last_ts_ns
    if last is not None and ts_ns > last:
        yield (f"note: the capture ended at {_iso(last)} (T is "
               f"{duration((ts_ns - last) / 1e9)} after its last packet): states as they "
               f"were left, TIME_WAITs expired by then ({expired} expired, 2×MSL = "
               f"{duration(msl2_ns / 1e9)}); nothing later was captured\n")
    elif first is not None and ts_ns < first:
        yield (f"note: the capture began at {_iso(first)} (T is "
               f"{duration((first - ts_ns) / 1e9)} before its first packet): no "
               f"connection had been seen yet\n")


def _rows(chunk: CaptureAnalysis, at: np.ndarray, show_all: bool) -> list[tuple]:
    """(state, local, peer, role, conn) of every endpoint shown (not UNSEEN; CLOSED only
    with ``show_all``), connection by connection, client first. Only the connections shown
    are turned into text (at a moment in a long capture, most have ended or not begun)."""
    shown = at != int(EndpointState.UNSEEN)
    if not show_all:
        shown &= at != int(EndpointState.CLOSED)
    conns = np.flatnonzero(shown.any(axis=1))
    if not len(conns):
        return []
    at_rows = chunk.table.at
    client = [_ep(ip, port) for ip, port in zip(at_rows("client_ip", conns).tolist(),
                                                at_rows("client_port", conns).tolist())]
    server = [_ep(ip, port) for ip, port in zip(at_rows("server_ip", conns).tolist(),
                                                at_rows("server_port", conns).tolist())]
    ids = [str(i) for i in at_rows("id", conns).tolist()]
    names = [state_names(at[conns, 0]).tolist(), state_names(at[conns, 1]).tolist()]
    show = shown[conns].tolist()
    rows = []
    for k in range(len(conns)):
        if show[k][0]:
            rows.append((names[0][k], client[k], server[k], "client", ids[k]))
        if show[k][1]:
            rows.append((names[1][k], server[k], client[k], "server", ids[k]))
    return rows


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
