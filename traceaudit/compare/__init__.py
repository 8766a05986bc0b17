"""Two vantage points of the same traffic: which connection is which (through NAT), and per
connection which packets were dropped on the path between them and which were created on it.

``compare_captures(a, b)`` reads both captures (``packets``), matches their connections
(``match``), aligns their packets (``align``) and returns a ``Comparison`` that the reports
(``report/compare_*``) render. ``a`` is taken as the client's side where the packets' timing
says nothing (see ``align``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from traceaudit.compare.align import (CREATED, DROPPED, NOT_JUDGED, RESEGMENTED, SEEN_BOTH,
                                      Alignment, align)
from traceaudit.compare.match import Pairing, match_connections
from traceaudit.compare.packets import Vantage, read_vantage

#: a matched pair none of whose common packets is this close to the clock offset the others
#: show is two connections that share an anchor by chance (allows for clock drift)
CHANCE_NS = 2_000_000_000


@dataclass
class PathPacket:
    """A packet seen at one vantage point only: ``kind`` dropped or created."""

    kind: str                   # "dropped" | "created"
    seen_in: str                # "a" | "b": the capture that holds it
    frame: int                  # its frame number in that capture
    ts_ns: int                  # its time in that capture's clock
    direction: str              # "client->server" | "server->client" (the client is a's)
    flags: int
    seq: int
    ack: int
    payload_len: int
    tsval: int | None
    tsecr: int | None
    row: int                    # its row in the vantage's packet columns
    #: the other capture's frame of the last packet of this connection seen at both before
    #: it (where it would have been); None when there is none
    after_other_frame: int | None = None
    #: it came after the other capture's last packet (on that clock, within the pairing
    #: tolerance): a pcap does not say when capture stopped, so it may have been dropped or
    #: created on the path, or the other capture had stopped before it got there
    after_other_end: bool = False


@dataclass
class ConnectionPair:
    """One connection seen in both captures."""

    index: int
    conn_a: int
    conn_b: int
    client_a: str               # ip:port as each capture saw the client and the server
    server_a: str
    client_b: str
    server_b: str
    evidence: tuple[str, ...]   # what matched them: isn, timestamps, payload, addresses
    score: int
    client_side: str            # "a" | "b": the capture beside the client
    client_side_from: str       # "timing" | "argument order"
    packets_a: int
    packets_b: int
    seen_both: int              # packets of a paired with one of b
    not_judged: int             # packets before the other capture began
    resegmented: int            # data segments cut differently at the two points (offload)
    dropped: list[PathPacket] = field(default_factory=list)
    created: list[PathPacket] = field(default_factory=list)

    @property
    def translated(self) -> bool:
        return (self.client_a, self.server_a) != (self.client_b, self.server_b)

    @property
    def differs(self) -> bool:
        return bool(self.dropped or self.created)


@dataclass
class UnmatchedConnection:
    side: str
    conn: int
    client: str
    server: str
    packets: int
    first_frame: int
    start_ts: float


@dataclass
class Comparison:
    a: Vantage
    b: Vantage
    alignment: Alignment
    pairs: list[ConnectionPair]
    unmatched_a: list[UnmatchedConnection]
    unmatched_b: list[UnmatchedConnection]

    @property
    def differing(self) -> list[ConnectionPair]:
        return [p for p in self.pairs if p.differs]

    @property
    def dropped(self) -> int:
        return sum(len(p.dropped) for p in self.pairs)

    @property
    def created(self) -> int:
        return sum(len(p.created) for p in self.pairs)

    @property
    def exit_code(self) -> int:
        """0 nothing dropped or created, 1 some (2, unreadable input, is the CLI's)."""
        return 1 if self.dropped or self.created else 0


def compare_captures(path_a: str, path_b: str, *, reader: str = "native") -> Comparison:
    a = read_vantage(path_a, reader=reader)
    b = read_vantage(path_b, reader=reader)
    return compare_vantages(a, b)


def compare_vantages(a: Vantage, b: Vantage) -> Comparison:
    pairing = match_connections(a, b)
    al = align(a, b, pairing)
    chance = _by_chance(a, b, pairing, al)
    if chance.any():
        pairing = pairing.only(~chance)
        al = align(a, b, pairing)
    pairs = _pairs(a, b, pairing, al)
    unmatched_a = _unmatched(a, "a", pairing.conn_a)
    unmatched_b = _unmatched(b, "b", pairing.conn_b)
    return Comparison(a, b, al, pairs, unmatched_a, unmatched_b)


def _by_chance(a: Vantage, b: Vantage, pairing: Pairing, al: Alignment) -> np.ndarray:
    """Per pair: two connections that share an anchor by chance (a 32-bit ISN among many
    connections), not one connection: no packet in common, or only ones (a SYN without
    timestamps) whose times at a and b disagree with the clock offset the others show."""
    rows = np.flatnonzero(al.partner_a >= 0)
    n = len(pairing.conn_a)
    common = np.bincount(al.pair_a[rows], minlength=n)
    off = np.abs(b.pk["ts_ns"][al.partner_a[rows]] - a.pk["ts_ns"][rows] - al.offset_ns)
    near = np.bincount(al.pair_a[rows][off <= CHANCE_NS], minlength=n)
    return (common == 0) | (near == 0)


def _pairs(a: Vantage, b: Vantage, pairing: Pairing, al: Alignment) -> list[ConnectionPair]:
    n = len(pairing.conn_a)
    count = {}
    for side, pair, status in (("a", al.pair_a, al.status_a), ("b", al.pair_b, al.status_b)):
        ok = pair >= 0
        for code in (SEEN_BOTH, NOT_JUDGED, RESEGMENTED):
            count[side, code] = np.bincount(pair[ok & (status == code)], minlength=n)
        count[side, "all"] = np.bincount(pair[ok], minlength=n)
    ends_a = {s: a.endpoints(s) for s in ("client", "server")}
    ends_b = {s: b.endpoints(s) for s in ("client", "server")}
    pairs = []
    for i in range(n):
        ca, cb = int(pairing.conn_a[i]), int(pairing.conn_b[i])
        # b's client is a's client unless b guessed the orientation the other way
        b_client, b_server = ("server", "client") if al.flip[i] else ("client", "server")
        pairs.append(ConnectionPair(
            index=i, conn_a=ca, conn_b=cb,
            client_a=ends_a["client"][ca], server_a=ends_a["server"][ca],
            client_b=ends_b[b_client][cb], server_b=ends_b[b_server][cb],
            evidence=pairing.evidence[i], score=int(pairing.score[i]),
            client_side="a" if al.client_on_a[i] else "b",
            client_side_from="timing" if al.client_side_known[i] else "argument order",
            packets_a=int(count["a", "all"][i]), packets_b=int(count["b", "all"][i]),
            seen_both=int(count["a", SEEN_BOTH][i]),
            not_judged=int(count["a", NOT_JUDGED][i] + count["b", NOT_JUDGED][i]),
            resegmented=int(count["a", RESEGMENTED][i] + count["b", RESEGMENTED][i])))
    for side, v, status, pair, direction, to_other, other_last in (
            ("a", a, al.status_a, al.pair_a, al.dir_a, al.offset_ns, _last_ns(b)),
            ("b", b, al.status_b, al.pair_b, al.dir_b, -al.offset_ns, _last_ns(a))):
        for row in np.flatnonzero((status == DROPPED) | (status == CREATED)).tolist():
            p = pairs[int(pair[row])]
            pp = _path_packet(v, side, row, int(status[row]), int(direction[row]))
            pp.after_other_end = pp.ts_ns + to_other > other_last - al.tolerance_ns
            (p.dropped if pp.kind == "dropped" else p.created).append(pp)
    for p in pairs:
        if p.differs:
            _place(p, a, b, al)
        p.dropped.sort(key=lambda x: (x.seen_in, x.frame))
        p.created.sort(key=lambda x: (x.seen_in, x.frame))
    return pairs


def _last_ns(v: Vantage) -> int:
    last = v.stats.last_ts_ns
    return last if last is not None else np.iinfo(np.int64).max // 2


def _place(p: ConnectionPair, a: Vantage, b: Vantage, al: Alignment) -> None:
    """Set each path packet's ``after_other_frame``."""
    for side, v, other, partner, conn in (("a", a, b, al.partner_a, p.conn_a),
                                          ("b", b, a, al.partner_b, p.conn_b)):
        mine = {x.row: x for x in (*p.dropped, *p.created) if x.seen_in == side}
        if not mine:
            continue
        last = None
        for row in v.rows_of(conn).tolist():
            if row in mine:
                mine[row].after_other_frame = last
            elif partner[row] >= 0:
                last = int(other.pk["frame"][partner[row]])


def _path_packet(v: Vantage, side: str, row: int, status: int, direction: int) -> PathPacket:
    pk = v.pk
    has_ts = bool(pk["has_ts"][row])
    return PathPacket(
        kind="dropped" if status == DROPPED else "created", seen_in=side,
        frame=int(pk["frame"][row]), ts_ns=int(pk["ts_ns"][row]),
        direction="client->server" if direction == 0 else "server->client",
        flags=int(pk["flags"][row]), seq=int(pk["seq"][row]), ack=int(pk["ack"][row]),
        payload_len=int(pk["payload_len"][row]),
        tsval=int(pk["tsval"][row]) if has_ts else None,
        tsecr=int(pk["tsecr"][row]) if has_ts else None, row=row)


def _unmatched(v: Vantage, side: str, matched: np.ndarray) -> list[UnmatchedConnection]:
    is_matched = np.zeros(len(v.flows), np.bool_)
    is_matched[matched] = True
    left = np.flatnonzero(~is_matched)
    packets = np.asarray(v.flows["client_packets"]) + np.asarray(v.flows["server_packets"])
    first = np.asarray(v.flows["first_frame"])
    start = np.asarray(v.flows["start_ts"])
    ends = {s: v.endpoints(s) for s in ("client", "server")}
    return [UnmatchedConnection(side, c, ends["client"][c], ends["server"][c],
                                int(packets[c]), int(first[c]), float(start[c]))
            for c in left.tolist()]


__all__ = ["Comparison", "ConnectionPair", "PathPacket", "UnmatchedConnection",
           "compare_captures", "compare_vantages"]
