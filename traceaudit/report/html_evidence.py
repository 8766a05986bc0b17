"""What the HTML report reads of one capture's connections, gathered in one pass over them a
chunk at a time: the whole table of a read that kept everything is one chunk, a flat read's
spill (``retire/flat.py``) is read a bucket at a time. So the page is the same either way, and
a flat read's memory stays bounded: aggregates (endings, the state census, the services table,
the hosts of the findings) are sums over chunks, and only the connections the drawn findings
name keep their details, timelines and packets (``Conn``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from traceaudit.pipeline import CaptureAnalysis
from traceaudit.report import census as C
from traceaudit.report._census import _held_counts
from traceaudit.tracking.states import EndpointState
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT

_N = len(EndpointState)
_KINDS = ("graceful", "half_closed", "reset", "refused", "open")
CLIENT, SERVER = 1, 2          # whose address a finding's host is (``Wants.host_from``)


@dataclass
class Wants:
    """What the findings ask of one capture."""

    conns: np.ndarray             # every finding's connection (-1: none)
    host_from: np.ndarray         # uint8 per finding: CLIENT/SERVER address as its host, or 0
    details: set[int] = field(default_factory=set)     # connections drawn in full
    frames: set[int] = field(default_factory=set)      # frames whose connection is looked up
    addresses: set[int] = field(default_factory=set)   # connections whose addresses are listed


@dataclass
class Conn:
    """A connection the page draws: its endpoints, end states, timeline and kept packets."""

    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    client_state: str
    server_state: str
    events: np.ndarray
    packets: list | None          # None: no excerpts were kept
    count: int


@dataclass
class Gathered:
    n: int
    roles: Counter
    kinds: Counter
    census: C.Census | None       # on the capture's own clock (None: no connection or time)
    merged: dict | None           # every state's levels on the run's clock (``grid``)
    services: list[dict]          # ``census.per_service``'s rows
    hosts: Counter                # findings per host taken from their connection's address
    conns: dict[int, Conn]        # id -> a connection drawn
    by_frame: dict[int, int]      # frame -> the connection a ladder shows for it
    addresses: dict[int, tuple[str, str]]    # id -> (client ip, server ip)


def gather(a: CaptureAnalysis, wants: Wants, grid: tuple[int, int] | None,
           samples: int = 400) -> Gathered:
    """One capture's part of the page. ``grid``: the run's clock (first, last ns) when the
    census sums captures on one clock (``html_census.one_clock``)."""
    st = a.stats
    timed = len(a.table) > 0 and st.first_ts_ns is not None
    t0, t1 = (st.first_ts_ns or 0), (st.last_ts_ns or 0)
    roles, kinds, hosts = Counter(), Counter(), Counter()
    census = CensusSum(t0, t1, grid, samples)
    services = ServiceTotals(t1, samples)
    frames = _FrameLookup(wants.frames)
    conns: dict[int, Conn] = {}
    addresses: dict[int, tuple[str, str]] = {}
    order = np.argsort(wants.conns, kind="stable")
    sorted_conns = wants.conns[order]
    listed = np.array(sorted(wants.addresses), np.int64)
    for first_id, table, events, excerpts in _chunks(a):
        k = len(table)
        if not k:
            continue
        roles.update(table.value_counts("close_role"))
        kinds.update(table.value_counts("close_kind"))
        lo, hi = np.searchsorted(sorted_conns, [first_id, first_id + k])
        mine = order[lo:hi]                      # the findings about this chunk's connections
        rows = wants.conns[mine] - first_id
        if timed:
            ch = census.add(events)
            services.add(table, ch, np.bincount(rows, minlength=k))
        hosts.update(_hosts(table, rows, wants.host_from[mine]))
        lo, hi = np.searchsorted(listed, [first_id, first_id + k])
        addresses.update(_addresses(table, listed[lo:hi], first_id))
        ex = _ExcerptsOf(excerpts, k)
        frames.add(table, ex, first_id)
        drawn = {c for c in (*wants.details, *frames.first_hit.values())
                 if first_id <= c < first_id + k}
        if drawn:
            # each drawn connection's events: one search of the chunk's (sorted) column
            rows = np.array(sorted(drawn), np.int64) - first_id
            bounds = np.searchsorted(np.ascontiguousarray(events[:, EV_CONN]),
                                     np.stack([rows, rows + 1]))
            for row, lo, hi in zip(rows.tolist(), *bounds.tolist()):
                conns[first_id + row] = _conn(table, events[lo:hi], ex, row)
    return Gathered(len(a.table), roles, kinds, census.census() if timed else None,
                    census.merged, services.rows() if timed else [], hosts, conns,
                    frames.result(), addresses)


class CensusSum:
    """``census.census`` (and ``html_census.merged_levels`` on the run's ``grid``) summed
    over a capture's chunks of events."""

    def __init__(self, t0: int, t1: int, grid: tuple[int, int] | None, samples: int) -> None:
        self.t0, self.t1, self.grid, self.samples = t0, t1, grid, samples
        self.levels = np.zeros((_N, samples), np.int64)
        self.final = np.zeros(_N, np.int64)
        self.merged = {s.name: np.zeros(samples, np.int64) for s in C.CENSUS_STATES} \
            if grid else None

    def add(self, events: np.ndarray) -> C.Changes:
        """Add a chunk's events (each endpoint's all in it); their ``Changes``."""
        ch = C.Changes(events, self.t0, self.t1, self.samples)
        self.levels += ch.levels(ch.state, _N)
        if len(events):
            self.final += np.bincount(ch.state[~ch.nxt], minlength=_N)
        if self.merged is not None:
            from traceaudit.report.html_census import merged_levels
            for k, v in merged_levels([(events, self.t0, self.t1)], *self.grid,
                                      self.samples).items():
                self.merged[k] += v
        return ch

    def census(self) -> C.Census:
        times = np.linspace(self.t0, max(self.t1, self.t0 + 1), self.samples).astype(np.int64)
        out = {s.name: self.levels[s + 1] for s in C.CENSUS_STATES}
        return C.Census(times, out, {s.name: int(self.final[s + 1]) for s in C.CENSUS_STATES},
                        {k: int(v.max()) if len(v) else 0 for k, v in out.items()})


class _FrameLookup:
    """The connection a host-level finding's ladder shows for its first frame: the first (by
    id) whose kept packets hold the frame, else the first whose span holds it."""

    def __init__(self, frames: set[int]) -> None:
        self.frames = frames
        self.pending = set(frames)
        self.first_hit: dict[int, int] = {}
        self.found: dict[int, int] = {}

    def add(self, table, ex: "_ExcerptsOf", first_id: int) -> None:
        for fr in sorted(self.pending):
            hit = np.flatnonzero((table["first_frame"] <= fr) & (table["last_frame"] >= fr))
            if not len(hit):
                continue
            self.first_hit.setdefault(fr, first_id + int(hit[0]))
            for r in hit.tolist() if ex.kept else ():
                if any(p.frame == fr for p in ex.packets(r) or ()):
                    self.found[fr] = first_id + r
                    self.pending.discard(fr)
                    break

    def result(self) -> dict[int, int]:
        return {fr: self.found.get(fr, self.first_hit.get(fr)) for fr in self.frames
                if fr in self.found or fr in self.first_hit}


def _addresses(table, ids: np.ndarray, first_id: int) -> dict[int, tuple[str, str]]:
    """Connection ``ids`` (of this chunk) -> (client ip, server ip)."""
    if not len(ids):
        return {}
    at = ids - first_id
    return {c: (str(ci), str(si)) for c, ci, si in zip(
        ids.tolist(), table.at("client_ip", at).tolist(), table.at("server_ip", at).tolist())}


def _chunks(a: CaptureAnalysis) -> Iterator[tuple[int, object, np.ndarray, Callable]]:
    """(first id, flow table, events numbered by row, excerpts of rows) a chunk at a time."""
    from traceaudit.retire import flat
    from traceaudit.retire.excerpt_spill import SpilledExcerpts
    if not flat.is_flat(a):
        yield 0, a.table, a.events, lambda rows: (a.excerpts, rows)
        return
    spilled = a.excerpts if isinstance(a.excerpts, SpilledExcerpts) else None
    for chunk in flat.chunks(a, facts=False, zeek=False):
        table = chunk.table
        first_id = int(table["id"][0]) if len(table) else 0

        def excerpts(rows, table=table):
            if spilled is None:
                return None, rows
            return spilled.load(table["first_frame"][rows].tolist()), np.arange(len(rows))
        yield first_id, table, chunk.events, excerpts


class _ExcerptsOf:
    """A chunk's kept packets, read (from a spill: only of the rows asked) when first asked."""

    def __init__(self, excerpts: Callable, k: int) -> None:
        self._get, self._k = excerpts, k
        self._cache: dict[int, tuple[list, int]] = {}
        self.kept = excerpts(np.zeros(0, np.int64))[0] is not None

    def packets(self, row: int) -> list | None:
        return self.get(row)[0]

    def get(self, row: int) -> tuple[list | None, int]:
        """(kept packets, packets the connection had); (None, 0): none were kept."""
        if row not in self._cache:
            ex, at = self._get(np.array([row], np.int64))
            i = int(at[0])
            if ex is None or i >= len(ex.count):
                self._cache[row] = (None, 0)
            else:
                self._cache[row] = (ex.packets(i), int(ex.count[i]))
        return self._cache[row]


def _conn(table, events: np.ndarray, ex: _ExcerptsOf, row: int) -> Conn:
    """Connection ``row`` of a chunk, with ``events``: its own (copied)."""
    at = np.array([row], np.int64)
    v = {name: table.at(name, at)[0] for name in ("client_ip", "client_port", "server_ip",
                                                  "server_port", "client_state",
                                                  "server_state")}
    packets, count = ex.get(row)
    return Conn(str(v["client_ip"]), int(v["client_port"]), str(v["server_ip"]),
                int(v["server_port"]), str(v["client_state"]), str(v["server_state"]),
                events.copy(), packets, count)


def _hosts(table, rows: np.ndarray, host_from: np.ndarray) -> list[str]:
    """The hosts of the findings about ``rows`` that take their connection's address."""
    out = []
    for who, name in ((CLIENT, "client_ip"), (SERVER, "server_ip")):
        sel = rows[host_from == who]
        if len(sel):
            out += [str(h) for h in table.at(name, sel).tolist()]
    return out


class ServiceTotals:
    """``census.per_service`` summed over chunks: services numbered in order of first
    appearance across them, per service the counts, and the server side's CLOSE_WAIT census
    (for the sparklines) of every service that has one."""

    def __init__(self, end_ns: int, samples: int, min_hold_s: float = 1.0) -> None:
        self.end_ns, self.samples = end_ns, samples
        self.min_ns = int(min_hold_s * 1e9)
        self.code: dict[str, int] = {}
        self.connections = np.zeros(0, np.int64)
        self.kinds = np.zeros((0, len(_KINDS)), np.int64)
        self.long = np.zeros((0, 2, _N), np.int64)
        self.tw_end = np.zeros((2, 0), np.int64)
        self.found = np.zeros(0, np.int64)
        self.sparks: dict[int, np.ndarray] = {}

    def add(self, flows, ch: C.Changes, findings_per_row: np.ndarray) -> None:
        codes = self._codes(flows)
        n_srv = len(self.code)
        self._grow(n_srv)
        self.connections += np.bincount(codes, minlength=n_srv)
        kind_codes, kind_names = C._codes(flows, "close_kind")
        for j, kind in enumerate(_KINDS):
            if kind in kind_names:
                sel = kind_codes == kind_names.index(kind)
                self.kinds[:, j] += np.bincount(codes[sel], minlength=n_srv)
        _held_counts(ch.events, ch.nxt.view(np.uint8), codes, self.end_ns, self.min_ns,
                     self.long, self.tw_end)
        self.found += np.bincount(codes, weights=findings_per_row[:len(codes)],
                                  minlength=n_srv).astype(np.int64)
        events = ch.events
        rows = np.flatnonzero((ch.state == EndpointState.CLOSE_WAIT + 1) &
                              (events[:, EV_ENDPOINT] == 1))
        if len(rows):
            services, inverse = np.unique(codes[events[rows, EV_CONN]], return_inverse=True)
            key = np.full(len(events), -1, np.int64)
            key[rows] = inverse.reshape(-1)
            for s, lv in zip(services.tolist(), ch.levels(key, len(services), rows)):
                if s in self.sparks:
                    self.sparks[s] += lv
                else:
                    self.sparks[s] = lv

    def _codes(self, flows) -> np.ndarray:
        """Per row, its service's number (new services numbered in order of first row)."""
        ip_codes, names = C._codes(flows, "server_ip")
        keys = ip_codes * 65536 + np.asarray(flows["server_port"], np.int64)
        distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        local = np.empty(len(distinct), np.int64)
        for j in np.argsort(first, kind="stable").tolist():
            k = int(distinct[j])
            local[j] = self.code.setdefault(C._service(f"{names[k >> 16]}|{k & 0xFFFF}"),
                                            len(self.code))
        return np.ascontiguousarray(local[inverse.reshape(-1)])

    def _grow(self, n: int) -> None:
        m = len(self.connections)
        if n == m:
            return
        self.connections = np.concatenate([self.connections, np.zeros(n - m, np.int64)])
        self.found = np.concatenate([self.found, np.zeros(n - m, np.int64)])
        self.kinds = np.concatenate([self.kinds, np.zeros((n - m, len(_KINDS)), np.int64)])
        self.long = np.concatenate([self.long, np.zeros((n - m, 2, _N), np.int64)])
        self.tw_end = np.ascontiguousarray(
            np.concatenate([self.tw_end, np.zeros((2, n - m), np.int64)], axis=1))

    def rows(self, top: int = 25, spark_every: int = 3) -> list[dict]:
        """The ``top`` services that leak most, as ``census.per_service`` gives them."""
        if not self.code:
            return []
        out = {"service": np.array(list(self.code), dtype=object),
               "connections": self.connections}
        for j, kind in enumerate(_KINDS):
            out[kind] = self.kinds[:, j]
        for e, who in ((1, "server"), (0, "client")):
            for s in C.LEAK_STATES:
                out[f"{who}_{s.name}_held"] = self.long[:, e, s + 1]
            out[f"{who}_TIME_WAIT_end"] = self.tw_end[e]
        out["findings"] = self.found
        score = (out["server_CLOSE_WAIT_held"] + out["client_CLOSE_WAIT_held"] +
                 out["server_FIN_WAIT_2_held"] + out["client_FIN_WAIT_2_held"] +
                 out["server_SYN_RECEIVED_held"])
        chosen = np.lexsort((-out["connections"], -score, -self.found))[:top]
        none = np.zeros(self.samples, np.int64)
        values = [column[chosen].tolist() for column in out.values()]
        return [{**dict(zip(out, row)), "spark": self.sparks.get(int(s), none)[::spark_every]}
                for row, s in zip(zip(*values), chosen.tolist())]
