"""What every rule needs: tracker facts by name, connection identities, finding builders.

Rules are vectorised over the tracker's facts (``traceaudit.tracking.facts``: one record per
connection and endpoint, fields named as in facts.pxd); Python runs only for the rows that
produce a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from traceaudit.flows.columns import Coded, first_seen_codes
from traceaudit.rules.model import Finding, Rule, fingerprints
from traceaudit.tracking.facts import CONN_FIELDS, ENDPOINT_FIELDS

if TYPE_CHECKING:
    from traceaudit.pipeline import CaptureAnalysis

ENDPOINTS = ("client", "server")
NS = 1_000_000_000
NEVER = np.iinfo(np.int64).max


@dataclass
class View:
    """Read-only accessors over one capture's analysis."""

    analysis: "CaptureAnalysis"
    memo: dict = field(default_factory=dict)    # results several rules share
    # a chunk of a flat read (``retire/flat.py``): the whole capture's summaries (``TOTALS``
    # of the rule modules, summed over every chunk), and whether this is the last chunk;
    # None / True: this view is the whole capture
    totals: dict | None = None
    final: bool = True

    @classmethod
    def of(cls, analysis: "CaptureAnalysis") -> "View":
        """One view per analysis, shared by every rule (its column lists are built once)."""
        view = analysis.__dict__.get("_rules_view")
        if view is None or view.analysis is not analysis:
            view = analysis.__dict__["_rules_view"] = cls(analysis)
        return view

    @property
    def n(self) -> int:
        return len(self.analysis.table)

    def whole(self, name: str, summarize: Callable[["View"], Any]) -> Any:
        """The whole capture's summary ``name``: made by ``summarize`` from this view, or,
        for a chunk of a flat read, given (summed over the chunks)."""
        if self.totals is not None:
            return self.totals[name]
        key = ("whole", name)
        if key not in self.memo:
            self.memo[key] = summarize(self)
        return self.memo[key]

    @cached_property
    def ids(self) -> np.ndarray:
        """Each row's connection id (``tcp.stream``; the row number unless a chunk)."""
        return np.asarray(self.columns["id"], np.int64)

    @cached_property
    def endpoints(self) -> np.ndarray:
        """The tracker's endpoint facts: (n, 2) ENDPOINT_FACTS, [:, 0] client, [:, 1] server."""
        return self.analysis.tracked.endpoints[:self.n]

    @cached_property
    def conns(self) -> np.ndarray:
        """The tracker's connection facts: (n,) CONN_FACTS."""
        return self.analysis.tracked.conns[:self.n]

    def ep(self, e: int, field: str) -> np.ndarray:
        """Fact ``field`` (``EndpointFacts`` in facts.pxd) of endpoint ``e`` (0 client,
        1 server) for every connection (read-only)."""
        return self._field(e, field)

    def conn(self, field: str) -> np.ndarray:
        """Fact ``field`` (``ConnFacts`` in facts.pxd) of every connection (read-only)."""
        return self._field(None, field)

    def _field(self, e: int | None, name: str) -> np.ndarray:
        """Fact ``name`` of endpoint ``e`` (None: of the connection) as an array of its own,
        made once per view.

        A field of the tracker's structured arrays is a strided view (a connection's facts
        lie side by side, as the tracker kernel writes them), so a NumPy operation on it reads
        a cache line per connection: the rules' vector work takes longer on those views than
        on contiguous copies of the ~60 fields they use. The copies are rows of one large
        array (NumPy maps it in huge pages, and only the rows written become resident): ~25
        page faults instead of ~12,000 for as many separate arrays of 100,000 connections,
        the same memory."""
        column = self._fields.get((e, name))
        if column is None:
            source = (self.conns if e is None else self.endpoints[:, e])[name]
            # rows in the order fields are first asked for: the written rows are contiguous,
            # so the huge pages backing them hold no unwritten row
            column = self._field_block[len(self._fields)]
            column[:] = source
            column.flags.writeable = False
            self._fields[(e, name)] = column
        return column

    @cached_property
    def _fields(self) -> dict[tuple[int | None, str], np.ndarray]:
        return {}

    @cached_property
    def _field_block(self) -> np.ndarray:
        return np.empty((2 * len(ENDPOINT_FIELDS) + len(CONN_FIELDS), self.n), np.int64)

    def row(self, c: int, e: int | None = None) -> dict[str, int]:
        """Endpoint ``e``'s facts (None: the connection's) of connection ``c`` by name, as
        plain ints (fast to read one by one)."""
        facts = self.conns[c] if e is None else self.endpoints[c, e]
        return dict(zip(facts.dtype.names, facts.tolist()))

    @property
    def end_ns(self) -> int:
        """Capture end (last packet time)."""
        return int(self.analysis.tracked.end_ts_ns)

    @cached_property
    def handshake_seen(self) -> np.ndarray:
        return self.conn("midstream") == 0

    @cached_property
    def columns(self) -> "_TableColumns":
        """Flow-table columns by name, each made into an array when first read (the address
        columns are codes: rules rarely need their 100,000 strings)."""
        return _TableColumns(self.analysis.table)

    @cached_property
    def _hosts(self) -> tuple[tuple[np.ndarray, np.ndarray], list[str]]:
        """Client and server IP addresses as integer codes (one numbering for both sides) and
        the address of each code: rules group by host and write addresses without a string
        per connection."""
        table = self.analysis.table
        client, server = table.column("client_ip"), table.column("server_ip")
        if isinstance(client, Coded) and isinstance(server, Coded) and \
                client.labels is server.labels:            # as the flow builder makes them
            return (client.codes, server.codes), [str(x) for x in client.labels.tolist()]
        codes, labels = first_seen_codes(self.columns["client_ip"].tolist() +
                                         self.columns["server_ip"].tolist())
        return (codes[:self.n], codes[self.n:]), [str(x) for x in labels]

    @property
    def ip_codes(self) -> tuple[np.ndarray, np.ndarray]:
        return self._hosts[0]

    @cached_property
    def _port_prefixes(self) -> list[str]:
        """Each address code's text before the port: 'ip:' ('[ip]:' for IPv6)."""
        return [f"[{ip}]:" if ":" in ip else f"{ip}:" for ip in self._hosts[1]]

    def addresses(self, conns, e: int) -> list[str]:
        """Endpoint ``e`` of each connection in ``conns`` as ip:port ([ip]:port for IPv6).
        The last texts of each endpoint are kept: a rule writes its findings' messages with
        them, then ``findings`` their keys with the same."""
        rows = np.asarray(conns, np.int64)
        last = self.memo.get(("addresses", e))
        if last is not None and np.array_equal(last[0], rows):
            return last[1]
        prefixes = self._port_prefixes
        texts = [prefixes[code] + str(port) for code, port in
                 zip(self.ip_codes[e][rows].tolist(),
                     self.columns[f"{ENDPOINTS[e]}_port"][rows].tolist())]
        self.memo[("addresses", e)] = (rows, texts)
        return texts

    def address(self, c: int, e: int) -> str:
        """Endpoint ``e`` of connection ``c`` as ip:port ([ip]:port for IPv6)."""
        return self.addresses([c], e)[0]

    def service_codes(self, e: int) -> np.ndarray:
        """Endpoint ``e``'s (address, port) of every connection as one integer."""
        return self.ip_codes[e] * 65536 + self.columns[f"{ENDPOINTS[e]}_port"]

    def ip(self, c: int, e: int) -> str:
        """Endpoint ``e``'s address of connection ``c`` (from its code: no column of
        strings is made)."""
        return self._hosts[1][int(self.ip_codes[e][c])]

    def keys(self, conns) -> list[str]:
        """What identifies each connection of ``conns`` across runs (its endpoints and first
        frame), for fingerprints."""
        firsts = self.columns["first_frame"][np.asarray(conns, np.int64)].tolist()
        return [f"{a}>{b}#{f}" for a, b, f in zip(self.addresses(conns, 0),
                                                 self.addresses(conns, 1), firsts)]

    def finding(self, rule: Rule, c: int, e: int | None, ts_ns: int, frames: list[int],
                message: str, details: dict[str, Any], key: str | None = None) -> Finding:
        """A finding about connection ``c`` (endpoint ``e`` at fault, or None: both/neither);
        ``key`` names its subject for the fingerprint when that is not the connection."""
        return self.findings(rule, [int(c)], e, [int(ts_ns)], [frames], [message], [details],
                             None if key is None else [key])[0]

    def take(self, conns: np.ndarray, e: int | None, *fields: str) -> list[list[int]]:
        """Facts ``fields`` of endpoint ``e`` (None: connection facts) for the rows ``conns``,
        one plain list per field: a rule's findings are written from lists (a NumPy scalar
        read one at a time costs more than the finding's text)."""
        rows = np.asarray(conns, np.intp)
        facts = self.conns if e is None else self.endpoints[:, e]
        # field by field: NumPy gathers whole structured records one at a time (~20x slower)
        return [facts[name][rows].tolist() for name in fields]

    def findings(self, rule: Rule, conns: list[int], e: int | None, ts_ns: list[int],
                 frames: list[list[int]], messages: list[str],
                 details: list[dict[str, Any]], keys: list[str] | None = None
                 ) -> list[Finding]:
        """Findings about connections ``conns`` (endpoint ``e`` at fault, or None:
        both/neither), one per row of the other lists; ``keys``: their subjects, for the
        fingerprints, when not the connections (``View.keys``)."""
        path, name, code, severity = self.analysis.stats.path, rule.name, rule.code, rule.severity
        remediation, endpoint = rule.remediation, ENDPOINTS[e] if e is not None else None
        keys = self.keys(conns) if keys is None else keys
        prints = fingerprints(name, path, endpoint, [d.get("cause", "") for d in details], keys)
        ids = self.ids[np.asarray(conns, np.int64)].tolist()
        # (positional: tens of thousands of these on a large capture)
        return [Finding(name, code, severity, path, t / NS, sorted({f for f in fr if f >= 0}),
                        message, remediation, c, endpoint, None, f"tcp.stream eq {c}", detail,
                        key, fingerprint)
                for c, t, fr, message, detail, key, fingerprint in zip(
                    ids, ts_ns, frames, messages, details, keys, prints)]


class _TableColumns(dict):
    def __init__(self, table) -> None:
        super().__init__()
        self.table = table

    def __missing__(self, name: str) -> np.ndarray:
        column = self[name] = self.table[name]
        return column


@dataclass
class HalfClosedWait:
    """Per connection, how long an endpoint waited in a half-closed state (vectorised)."""

    stop: np.ndarray        # when the wait ended: the awaited FIN, an RST, expiry, capture end
    idle_from: np.ndarray   # start, or the waited-on side's last data within the wait
    hit: np.ndarray         # held at least min_duration, or open at capture end and idle


def half_closed_wait(v: View, start: np.ndarray, awaited: np.ndarray, active: int,
                     min_ns: int, cap: np.ndarray | None = None) -> HalfClosedWait:
    """The wait from ``start`` until ``awaited`` (a FIN time or NEVER), an RST by either side,
    ``cap`` (NEVER where none) or the capture end.

    A wait ended by an RST (or ``cap``) counts in full: the awaited close never came, however
    busy ``active`` (the endpoint whose data shows progress) was. Otherwise the clock starts at
    ``active``'s last data (a legitimate half-close keeps sending, then closes), and a wait
    still open at capture end counts if ``active`` sent nothing at all during it.
    """
    rst = np.minimum(np.where(v.ep(0, "rst_count") > 0, v.ep(0, "rst_ns"), NEVER),
                     np.where(v.ep(1, "rst_count") > 0, v.ep(1, "rst_ns"), NEVER))
    capped = np.zeros(v.n, bool) if cap is None else cap < NEVER
    limit = rst if cap is None else np.minimum(rst, cap)
    stop = np.maximum(np.minimum(np.minimum(awaited, limit), v.end_ns), start)
    data = v.ep(active, "last_data_ns")
    idle_from = np.where((data > start) & (data <= stop), data, start)
    reset = (rst < awaited) | capped
    held = np.where(reset, stop - start, stop - idle_from)
    open_at_end = (awaited == NEVER) & (rst == NEVER) & ~capped
    return HalfClosedWait(stop, idle_from,
                          (held >= min_ns) | (open_at_end & (idle_from == start)))


def still_waiting(waited_ns: int, min_ns: int) -> tuple[str, str]:
    """How a wait still open at capture end is told, and the finding's confidence: low when
    the capture is too short to show that it lasted ``min_ns``."""
    if waited_ns < min_ns:
        return ("and still was at capture end (the capture ends there, so how long it lasted "
                "is unknown)", "low")
    return "and still was at capture end", "high"


def seconds(ns: int | float) -> str:
    """A duration for people: 21 µs, 1.5 ms, 850 ms, 3.2 s, 4 min 12 s, 2 h 5 min (the one
    duration format of messages, the summary and the HTML report)."""
    s = abs(ns) / NS
    sign = "-" if ns < 0 else ""
    if s == 0:
        return "0 s"
    if s < 1e-3:
        return f"{sign}{s * 1e6:.0f} µs"
    if s < 0.01:
        return f"{sign}{s * 1e3:.1f} ms"
    if s < 1:
        return f"{sign}{s * 1000:.0f} ms"
    if s < 60:
        return f"{sign}{s:.1f} s"
    if s < 3600:
        return f"{sign}{int(s // 60)} min {int(s % 60)} s"
    return f"{sign}{int(s // 3600)} h {int(s % 3600 // 60)} min"


def frame_ref(frame: int) -> str:
    return f"frame {frame}" if frame >= 0 else "(no frame: inferred)"
