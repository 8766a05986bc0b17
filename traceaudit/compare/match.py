"""Which connection of one capture is which connection of the other, through NAT.

A connection is recognised by what a translating router leaves alone: the ISNs of both
directions (the SYN's and the SYN-ACK's sequence numbers), the TSval of its SYN and SYN-ACK
(Linux offsets timestamps per connection), and the (sequence number, payload length) of its
data segments, which also recognises a connection caught mid-stream. Its 4-tuple counts too,
but least (it is exactly what NAT changes). Each such *anchor* is a 64-bit key; a key that
more than ``CROWD`` connections of a capture share (a constant ISN from a test generator,
TSval 0) says nothing and is dropped. Two connections' score is the summed weight of the
anchors they share; pairs are taken greedily by score, each connection at most once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from traceaudit.capture.batch import ACK, SYN
from traceaudit.compare.arrays import member, unique_counts, unique_inverse
from traceaudit.compare.packets import Vantage

#: Anchor kinds (the key's top 4 bits) and their weights.
K_SYN, K_SYNACK, K_SYN_TS, K_SYNACK_TS, K_DATA, K_TUPLE = 1, 2, 3, 4, 5, 6
WEIGHT = {K_SYN: 8, K_SYNACK: 8, K_SYN_TS: 3, K_SYNACK_TS: 3, K_DATA: 1, K_TUPLE: 1}
EVIDENCE = {K_SYN: "isn", K_SYNACK: "isn", K_SYN_TS: "timestamps", K_SYNACK_TS: "timestamps",
            K_DATA: "payload", K_TUPLE: "addresses"}
#: a key shared by more connections than this in either capture is not evidence
CROWD = 4

_U64 = np.uint64


@dataclass(frozen=True)
class Pairing:
    """Matched connections: ``conn_a[i]`` is ``conn_b[i]``; ``score`` and the anchor kinds
    that matched them (``evidence``: names from ``EVIDENCE``, sorted)."""

    conn_a: np.ndarray
    conn_b: np.ndarray
    score: np.ndarray
    evidence: list[tuple[str, ...]]

    def only(self, keep: np.ndarray) -> "Pairing":
        """The pairs where ``keep`` (a boolean per pair) is True."""
        rows = np.flatnonzero(keep)
        return Pairing(self.conn_a[rows], self.conn_b[rows], self.score[rows],
                       [self.evidence[i] for i in rows.tolist()])


def anchors(v: Vantage) -> tuple[np.ndarray, np.ndarray]:
    """(connection, key) rows, unique, sorted by key, for every anchor of every connection of
    ``v``."""
    pk = v.pk
    flags = pk["flags"]
    syn = (flags & SYN) != 0
    has_ack = (flags & ACK) != 0
    seq = pk["seq"].astype(_U64)
    conns, keys = [], []

    def add(rows: np.ndarray, kind: int, value: np.ndarray, conn=pk["conn"]) -> None:
        conns.append(conn[rows])
        keys.append((_U64(kind) << _U64(60)) | (value[rows] & _U64((1 << 60) - 1)))

    add(np.flatnonzero(syn & ~has_ack), K_SYN, seq)
    add(np.flatnonzero(syn & has_ack), K_SYNACK, seq)
    tsval = pk["tsval"].astype(_U64)
    add(np.flatnonzero(syn & ~has_ack & pk["has_ts"] & (pk["tsval"] != 0)), K_SYN_TS, tsval)
    add(np.flatnonzero(syn & has_ack & pk["has_ts"] & (pk["tsval"] != 0)), K_SYNACK_TS, tsval)
    data = pk["payload_len"] > 0
    add(np.flatnonzero(data), K_DATA,
        (pk["payload_len"].astype(_U64) & _U64(0xFFFF)) << _U64(32) | seq)
    every = np.arange(len(v.flows))
    add(every, K_TUPLE, _tuple_hash(v), conn=every)
    conn = np.concatenate(conns).astype(np.int64)
    key = np.concatenate(keys)
    order = np.argsort(key)
    key, conn = key[order], conn[order]
    # one anchor per (connection, key), sorted by key: a retransmission repeats its data's
    # key. Only rows of keys held more than once need sorting by connection too.
    repeated = np.zeros(len(key), np.bool_)
    if len(key) > 1:
        same = key[1:] == key[:-1]
        repeated[1:] |= same
        repeated[:-1] |= same
    pos = np.flatnonzero(repeated)
    src = pos[np.lexsort((conn[pos], key[pos]))]
    conn[pos] = conn[src]
    key[pos] = key[src]
    keep = np.ones(len(key), np.bool_)
    keep[pos[1:]] = (key[pos[1:]] != key[pos[:-1]]) | (conn[pos[1:]] != conn[pos[:-1]])
    return conn[keep], key[keep]


def _tuple_hash(v: Vantage) -> np.ndarray:
    """One 60-bit value per connection from its client and server address and port."""
    f = v.flows
    out = np.zeros(len(f), _U64)
    for name in ("client_ip", "server_ip"):
        col = f.column(name)
        codes = col.codes if hasattr(col, "codes") else np.zeros(len(f), np.int64)
        labels = col.labels if hasattr(col, "labels") else np.array([""], object)
        label_hash = np.array([_stable_hash(str(x)) for x in labels], _U64)
        out = mix(out, label_hash[codes] if len(labels) else np.zeros(len(f), _U64))
    for name in ("client_port", "server_port"):
        out = mix(out, np.asarray(f[name]).astype(_U64))
    return out


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def mix(h: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Fold ``x`` into the 64-bit hash ``h`` (wrapping multiply and xor-shift, per row)."""
    with np.errstate(over="ignore"):
        h = (h ^ x.astype(_U64)) * _U64(0x9E3779B97F4A7C15)
        return h ^ (h >> _U64(29))


def match_connections(a: Vantage, b: Vantage) -> Pairing:
    pa, pb, kind = _shared_anchors(*anchors(a), *anchors(b))
    if not len(pa):
        return Pairing(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), [])
    ua, ub, score, bits = _scored(pa, pb, kind, len(b.flows))
    chosen = _chosen(ua, ub, score, np.abs(_start_ns(a)[ua] - _start_ns(b)[ub]))
    names = {value: tuple(sorted({EVIDENCE[k] for k in EVIDENCE if value >> k & 1}))
             for value in np.unique(bits[chosen]).tolist()}
    return Pairing(ua[chosen], ub[chosen], score[chosen],
                   [names[x] for x in bits[chosen].tolist()])


def _shared_anchors(ca, ka, cb, kb) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(connection in a, connection in b, anchor kind) for every key both hold (``ka``,
    ``kb`` sorted), but keys more than ``CROWD`` connections of a capture hold."""
    # (sorted keys looked up in sorted keys: the lookups stay in the cache)
    ka_u, ka_n = unique_counts(ka, presorted=True)
    kb_u, kb_n = unique_counts(kb, presorted=True)
    ka_u, kb_u = ka_u[ka_n <= CROWD], kb_u[kb_n <= CROWD]
    good = ka_u[member(ka_u, kb_u)]
    keep_a, keep_b = member(ka, good), member(kb, good)
    ca, ka, cb, kb = ca[keep_a], ka[keep_a], cb[keep_b], kb[keep_b]
    # every (connection in a, connection in b) sharing a key: at most CROWD x CROWD per key
    lo = np.searchsorted(kb, ka, "left")
    reps = np.searchsorted(kb, ka, "right") - lo
    rows_a = np.repeat(np.arange(len(ka)), reps)
    rows_b = (np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
              + np.repeat(lo, reps)).astype(np.int64)
    return ca[rows_a], cb[rows_b], (ka[rows_a] >> _U64(60)).astype(np.int64)


def _scored(pa, pb, kind, n_b: int) -> tuple[np.ndarray, ...]:
    """Distinct candidate pairs (connection in a, in b), their score (summed weights) and the
    anchor kinds they share (bit k set: kind k)."""
    weights = np.zeros(16, np.int64)
    for k, w in WEIGHT.items():
        weights[k] = w
    uniq, inverse = unique_inverse(pa * (n_b + 1) + pb)
    score = np.bincount(inverse, weights=weights[kind]).astype(np.int64)
    bits = np.zeros(len(uniq), np.int64)
    np.bitwise_or.at(bits, inverse, np.left_shift(1, kind))
    return uniq // (n_b + 1), uniq % (n_b + 1), score, bits


def _chosen(ua, ub, score, apart_ns) -> np.ndarray:
    """Indices of the candidates taken, each connection at most once, sorted by connection:
    a candidate whose two connections have no other is taken as it is; the others greedily,
    best score first, then closest starts (``apart_ns``). A pair held together by its
    addresses alone is thus taken only when no better candidate claims either connection."""
    alone = (np.bincount(ua)[ua] == 1) & (np.bincount(ub)[ub] == 1)
    chosen = np.flatnonzero(alone).tolist()
    contested = np.flatnonzero(~alone)
    used_a, used_b = set(), set()
    for i in contested[np.lexsort((apart_ns[contested], -score[contested]))].tolist():
        x, y = int(ua[i]), int(ub[i])
        if x in used_a or y in used_b:
            continue
        used_a.add(x)
        used_b.add(y)
        chosen.append(i)
    chosen_ix = np.array(chosen, np.int64)
    return chosen_ix[np.lexsort((ub[chosen_ix], ua[chosen_ix]))]


def _start_ns(v: Vantage) -> np.ndarray:
    first = np.asarray(v.flows["start_ts"], np.float64)
    return (first * 1e9).astype(np.int64)
