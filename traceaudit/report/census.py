"""State census: how many endpoints were in each state over time, computed from the events.

Each endpoint's state is a step function: an event adds one to the state it enters, and the
endpoint's next event takes that one away again. Counting both per point of a time grid, then
running sums (one compiled pass, no sort; the kernels are in ``_census``) samples every state's
census at once. ``Changes`` holds what the census, the per-service table and its sparklines
share, computed once per capture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traceaudit.flows.columns import Coded, Columns, first_seen_codes
from traceaudit.report._census import _held_counts, _levels, _slots
from traceaudit.tracking.states import EndpointState
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_STATE, EV_TS

_N = len(EndpointState)           # state value + 1 indexes rows (UNSEEN is -1)
#: States drawn in the census (CLOSED only grows; UNSEEN is not a state).
CENSUS_STATES = [s for s in EndpointState if s not in (EndpointState.UNSEEN, EndpointState.CLOSED)]
#: States in which a socket lingers when an application or a peer misbehaves.
LEAK_STATES = (EndpointState.CLOSE_WAIT, EndpointState.FIN_WAIT_2, EndpointState.SYN_RECEIVED,
               EndpointState.LAST_ACK)
_KINDS = ("graceful", "half_closed", "reset", "refused", "open")


@dataclass
class Census:
    times_ns: np.ndarray                  # (samples,) grid points
    levels: dict[str, np.ndarray]         # state name -> endpoints in it at each grid point
    final: dict[str, int]                 # state name -> endpoints in it at capture end
    peak: dict[str, int]                  # state name -> highest sampled count

    @property
    def step_s(self) -> float:
        t = self.times_ns
        return float(t[1] - t[0]) / 1e9 if len(t) > 1 else 0.0


class Changes:
    """One capture's events on a time grid of ``samples`` points over [t0, t1].

    ``state``: state + 1 entered at each event row; ``slot``: the grid point from which the
    event counts (``samples``: after the grid); ``nxt``: whether the row's endpoint has a later
    event (then the state is left at the next row's slot).
    """

    def __init__(self, events: np.ndarray, t0_ns: int, t1_ns: int, samples: int = 400) -> None:
        self.events = events
        self.samples = samples
        self.times = np.linspace(t0_ns, max(t1_ns, t0_ns + 1), samples).astype(np.int64)
        self.state = events[:, EV_STATE] + 1
        t0 = int(self.times[0])
        step = max(int(self.times[-1]) - t0, 1) / max(samples - 1, 1)
        self.slot, self.nxt = _slots(events, t0, step, samples)

    def levels(self, key: np.ndarray, n_keys: int, rows: np.ndarray | None = None) -> np.ndarray:
        """(n_keys, samples) census of event rows grouped by ``key`` (per row; -1: skip)."""
        every = rows is None                      # (no index array of every row)
        rows = np.zeros(0, np.int64) if every else np.ascontiguousarray(rows, np.int64)
        return _levels(np.ascontiguousarray(key, np.int64), self.slot, self.nxt.view(np.uint8),
                       rows, every, n_keys, self.samples)


def census(ch: Changes) -> Census:
    """Every state's census, sampled on the grid of ``ch``."""
    levels = ch.levels(ch.state, _N)
    ends = ~ch.nxt
    final = np.bincount(ch.state[ends], minlength=_N) if len(ends) else np.zeros(_N, np.int64)
    out = {s.name: levels[s + 1] for s in CENSUS_STATES}
    return Census(ch.times, out, {s.name: int(final[s + 1]) for s in CENSUS_STATES},
                  {k: int(v.max()) if len(v) else 0 for k, v in out.items()})


def held(events: np.ndarray, end_ns: int, nxt: np.ndarray) -> np.ndarray:
    """Per event row, how long the endpoint stayed in the state it entered (until its next
    event, or the capture end). (``per_service`` counts with the same rule in its compiled
    pass; this is the plain definition, for other uses and its test.)"""
    if not len(events):
        return np.empty(0, np.int64)
    ts = events[:, EV_TS]
    return np.where(nxt, np.r_[ts[1:], end_ns], end_ns) - ts


def per_service(flows: Columns, ch: Changes, end_ns: int,
                findings_per_conn: np.ndarray | None = None, top: int = 25,
                min_hold_s: float = 1.0, spark_every: int = 3) -> list[dict]:
    """The ``top`` services (server ip:port) that leak most, a dict each. Per side:
    connections whose endpoint stayed in a leak state at least ``min_hold_s`` (``*_held``),
    those in TIME_WAIT at the end (``*_TIME_WAIT_end``), findings about the service, and
    (``spark``) the server side's CLOSE_WAIT census (every ``spark_every``-th grid point).
    ``flows``: the flow table's columns (no DataFrame of all connections is made)."""
    if not len(flows):
        return []
    events = ch.events
    codes, names = service_codes(flows)
    n_srv = len(names)
    out = {"service": np.array(names, dtype=object),
           "connections": np.bincount(codes, minlength=n_srv)}
    kind_codes, kind_names = _codes(flows, "close_kind")
    by_kind = np.bincount(codes * len(kind_names) + kind_codes,
                          minlength=n_srv * len(kind_names)).reshape(n_srv, len(kind_names))
    kind_names = list(kind_names)
    for kind in _KINDS:
        out[kind] = by_kind[:, kind_names.index(kind)] if kind in kind_names else \
            np.zeros(n_srv, np.int64)
    long = np.zeros((n_srv, 2, _N), np.int64)
    tw_end = np.zeros((2, n_srv), np.int64)
    _held_counts(events, ch.nxt.view(np.uint8), np.ascontiguousarray(codes, np.int64), end_ns,
                 int(min_hold_s * 1e9), long, tw_end)
    for e, who in ((1, "server"), (0, "client")):
        for s in LEAK_STATES:
            out[f"{who}_{s.name}_held"] = long[:, e, s + 1]
        out[f"{who}_TIME_WAIT_end"] = tw_end[e]
    found = np.zeros(n_srv, np.int64)
    if findings_per_conn is not None and len(findings_per_conn):
        found = np.bincount(codes, weights=findings_per_conn[:len(codes)],
                            minlength=n_srv).astype(np.int64)
    out["findings"] = found
    score = (out["server_CLOSE_WAIT_held"] + out["client_CLOSE_WAIT_held"] +
             out["server_FIN_WAIT_2_held"] + out["client_FIN_WAIT_2_held"] +
             out["server_SYN_RECEIVED_held"])
    # most findings, then most lingering, then most connections (ties: first seen first)
    chosen = np.lexsort((-out["connections"], -score, -found))[:top]
    sparks = _sparks(ch, codes, chosen)[:, ::spark_every]
    values = [column[chosen].tolist() for column in out.values()]
    return [{**dict(zip(out, row)), "spark": spark} for row, spark in zip(zip(*values), sparks)]


def _sparks(ch: Changes, codes: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The server endpoint's CLOSE_WAIT census for each chosen service."""
    events = ch.events
    if not len(events) or not len(chosen):
        return np.zeros((len(chosen), ch.samples), np.int64)
    rank = np.full(codes.max() + 1, -1, np.int64)
    rank[chosen] = np.arange(len(chosen))
    rows = np.flatnonzero((ch.state == EndpointState.CLOSE_WAIT + 1) &
                          (events[:, EV_ENDPOINT] == 1))
    key = np.full(len(events), -1, np.int64)
    key[rows] = rank[codes[events[rows, EV_CONN]]]
    return ch.levels(key, len(chosen), rows)


def service_codes(flows: Columns) -> tuple[np.ndarray, list[str]]:
    """Per connection, the index of its service (server ip:port), numbered in order of first
    appearance; and the services' names."""
    ip_codes, names = _codes(flows, "server_ip")     # (the flow builder's address codes)
    keys = ip_codes * 65536 + np.asarray(flows["server_port"], np.int64)
    distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")          # number them by first appearance
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], [_service(f"{names[k >> 16]}|{k & 0xFFFF}")
                                       for k in distinct[order].tolist()]


def _codes(flows: Columns, name: str) -> tuple[np.ndarray, list]:
    """A column as (integer codes, the values they stand for)."""
    column = flows.column(name)
    if isinstance(column, Coded):
        return column.codes.astype(np.int64), column.labels.tolist()
    return first_seen_codes(np.asarray(column).tolist())


def _service(key: str) -> str:
    ip, port = key.split("|")
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
