"""State census: how many endpoints were in each state over time, computed from the events.

Each endpoint's state is a step function; an event adds one to the state it enters and takes
one from the state it leaves. Summing the deltas up to each point of a time grid (one
``bincount`` and a ``cumsum``, no sort) samples every state's census at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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


def deltas(events: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(event row, ts, state + 1, +1/-1) per change: +1 for the state entered, -1 for the one
    left (events are sorted by connection, endpoint, time)."""
    n = len(events)
    if not n:
        e = np.empty(0, np.int64)
        return e, e, e, e
    conn, side = events[:, EV_CONN], events[:, EV_ENDPOINT]
    state = events[:, EV_STATE] + 1
    ts = events[:, EV_TS]
    left = np.flatnonzero((conn[1:] == conn[:-1]) & (side[1:] == side[:-1])) + 1
    rows = np.concatenate([np.arange(n), left])
    d = np.ones(n + len(left), np.int64)
    d[n:] = -1
    return rows, np.concatenate([ts, ts[left]]), np.concatenate([state, state[left - 1]]), d


def grid(t0_ns: int, t1_ns: int, samples: int) -> np.ndarray:
    return np.linspace(t0_ns, max(t1_ns, t0_ns + 1), samples).astype(np.int64)


def _sample_index(ts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the first grid point at or after each ts (a change counts from there on)."""
    t0, t1 = times[0], times[-1]
    step = (t1 - t0) / max(len(times) - 1, 1)
    idx = np.ceil((ts - t0) / step).astype(np.int64)
    return np.clip(idx, 0, len(times))      # len(times): after the grid, never counted


Deltas = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def census(events: np.ndarray, t0_ns: int, t1_ns: int, samples: int = 400,
           changes: Deltas | None = None) -> Census:
    """Every state's census of ``events`` sampled at ``samples`` points over [t0, t1]
    (``changes``: ``deltas(events)`` when already computed)."""
    times = grid(t0_ns, t1_ns, samples)
    _, ts, st, d = changes if changes is not None else deltas(events)
    width = samples + 1
    counts = np.bincount(st * width + _sample_index(ts, times), weights=d,
                         minlength=_N * width)
    levels = np.cumsum(counts.reshape(_N, width), axis=1).astype(np.int64)
    final = np.bincount(st, weights=d, minlength=_N).astype(np.int64)
    out = {s.name: levels[s + 1, :samples] for s in CENSUS_STATES}
    return Census(times, out, {s.name: int(final[s + 1]) for s in CENSUS_STATES},
                  {k: int(v.max()) if len(v) else 0 for k, v in out.items()})


def held(events: np.ndarray, end_ns: int) -> np.ndarray:
    """Per event row, how long the endpoint stayed in the state it entered (until its next
    event, or the capture end)."""
    if not len(events):
        return np.empty(0, np.int64)
    conn, side, ts = events[:, EV_CONN], events[:, EV_ENDPOINT], events[:, EV_TS]
    last = np.r_[(conn[1:] != conn[:-1]) | (side[1:] != side[:-1]), True]
    nxt = np.r_[ts[1:], end_ns]
    return np.where(last, end_ns, nxt) - ts


def per_service(flows: pd.DataFrame, events: np.ndarray, t0_ns: int, t1_ns: int,
                findings_per_conn: np.ndarray | None = None, top: int = 25,
                samples: int = 120, min_hold_s: float = 1.0,
                changes: Deltas | None = None) -> pd.DataFrame:
    """The ``top`` services (server ip:port) that leak most. Per side: connections whose
    endpoint stayed in a leak state at least ``min_hold_s`` (``*_held``; TIME_WAIT always
    does, so it counts those still in it at the end, ``*_end``); findings about the service;
    and (column ``spark``) the server side's CLOSE_WAIT census over time."""
    if flows.empty:
        return pd.DataFrame()
    codes, names = service_codes(flows)
    n_srv = len(names)
    out = {"service": np.array(names, dtype=object),
           "connections": np.bincount(codes, minlength=n_srv)}
    kinds = flows["close_kind"].to_numpy()
    for kind in _KINDS:
        out[kind] = np.bincount(codes, weights=kinds == kind, minlength=n_srv).astype(np.int64)
    long = np.zeros((n_srv, 2, _N), np.int64)
    if len(events):
        keep = held(events, t1_ns) >= int(min_hold_s * 1e9)
        ev = events[keep]
        ix = (codes[ev[:, EV_CONN]] * 2 + ev[:, EV_ENDPOINT]) * _N + ev[:, EV_STATE] + 1
        long = np.bincount(ix, minlength=n_srv * 2 * _N).reshape(n_srv, 2, _N)
    for e, who in ((1, "server"), (0, "client")):
        for s in LEAK_STATES:
            out[f"{who}_{s.name}_held"] = long[:, e, s + 1]
        out[f"{who}_TIME_WAIT_end"] = np.bincount(
            codes, weights=flows[f"{who}_state"].to_numpy() == "TIME_WAIT",
            minlength=n_srv).astype(np.int64)
    found = np.zeros(n_srv, np.int64)
    if findings_per_conn is not None and len(findings_per_conn):
        found = np.bincount(codes, weights=findings_per_conn[:len(codes)],
                            minlength=n_srv).astype(np.int64)
    out["findings"] = found
    table = pd.DataFrame(out)
    table["_code"] = np.arange(n_srv)
    table["_score"] = (table["server_CLOSE_WAIT_held"] + table["client_CLOSE_WAIT_held"] +
                       table["server_FIN_WAIT_2_held"] + table["client_FIN_WAIT_2_held"] +
                       table["server_SYN_RECEIVED_held"])
    table = table.sort_values(["findings", "_score", "connections"], ascending=False,
                              kind="stable").head(top)
    table["spark"] = _sparks(codes, table["_code"].to_numpy(), events, t0_ns, t1_ns, samples,
                             changes)
    return table.drop(columns=["_score", "_code"]).reset_index(drop=True)


def _sparks(codes, chosen, events, t0_ns, t1_ns, samples, changes) -> list[np.ndarray]:
    """The server endpoint's CLOSE_WAIT census for each chosen service."""
    if not len(events) or not len(chosen):
        return [np.zeros(samples, np.int64) for _ in chosen]
    rank = np.full(codes.max() + 1, -1, np.int64)
    rank[chosen] = np.arange(len(chosen))
    rows, ts, st, d = changes if changes is not None else deltas(events)
    r = rank[codes[events[rows, EV_CONN]]]
    keep = (r >= 0) & (events[rows, EV_ENDPOINT] == 1) & (st == EndpointState.CLOSE_WAIT + 1)
    times = grid(t0_ns, t1_ns, samples)
    width = samples + 1
    counts = np.bincount(r[keep] * width + _sample_index(ts[keep], times), weights=d[keep],
                         minlength=len(chosen) * width)
    levels = np.cumsum(counts.reshape(len(chosen), width), axis=1).astype(np.int64)
    return list(levels[:, :samples])


def service_codes(flows: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Per connection, the index of its service (server ip:port); and the services' names."""
    ip_codes, ips = pd.factorize(flows["server_ip"], sort=False)
    key = ip_codes.astype(np.int64) * 65536 + flows["server_port"].to_numpy().astype(np.int64)
    codes, keys = pd.factorize(key, sort=False)
    return codes, [_service(f"{ips[k >> 16]}|{k & 0xFFFF}") for k in keys.tolist()]


def _service(key: str) -> str:
    ip, port = key.split("|")
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
