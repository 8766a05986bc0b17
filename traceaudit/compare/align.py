"""Packet by packet: which segments crossed the path between the two vantage points, which were
lost on it, and which something on it made.

A segment is recognised by its content after translation: the connection (a matched pair),
its direction, seq, ack, flags, payload length, TSval and TSecr (0 when absent). Segments with
the same content (a retransmission sent twice, duplicate ACKs) are paired in capture order
when both captures hold as many copies; otherwise each copy the receiver's vantage holds takes
one of the sender's copies sent before it arrived: the one with its IP ID where the path
evidently keeps IP IDs, else the one whose transit time is nearest the path's delay (a
retransmission follows its original by at least an RTO, far longer than a path delay). The
sender's copies left over were dropped.

Which vantage is the *sender's* depends on the direction and on which side of the path the
connection's client is: a capture beside the client sees its segments before the other capture
does and the server's after. The clock offset between the captures and the client's side come
from the segments seen at both: with d(p) = time at b - time at a, the client's segments give
offset + delay and the server's offset - delay, so the midpoint of their medians is the offset
and their difference says where the client is, decided per client host over all its
connections (the argument order, a = client side, when they give no such evidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traceaudit.compare.arrays import member, unique_counts
from traceaudit.compare.match import Pairing, mix
from traceaudit.compare.packets import Vantage
from traceaudit.compare.resegment import resegmented

#: ``status`` codes of a packet row
SEEN_BOTH, DROPPED, CREATED, NOT_JUDGED, UNMATCHED_CONN, RESEGMENTED = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {SEEN_BOTH: "seen at both", DROPPED: "dropped on the path",
                CREATED: "created on the path",
                NOT_JUDGED: "before the other capture began",
                UNMATCHED_CONN: "connection not in the other capture",
                RESEGMENTED: "its bytes seen at both, cut differently (offload)"}

#: pairing tolerance: base, plus twice the 99th percentile of the delays seen, at most the cap
TOL_BASE_NS, TOL_CAP_NS = 10_000_000, 500_000_000

_U64 = np.uint64


@dataclass
class Alignment:
    """Per packet row of each capture: ``partner`` (the row in the other capture, -1) and
    ``status``; per matched pair: ``client_on_a`` and ``flip`` (b's client is a's server);
    the clock ``offset_ns`` (b's clock minus a's) and the samples it came from."""

    partner_a: np.ndarray
    partner_b: np.ndarray
    status_a: np.ndarray
    status_b: np.ndarray
    pair_a: np.ndarray             # pair index of each row of a (-1: unmatched connection)
    pair_b: np.ndarray
    dir_a: np.ndarray              # 0 client -> server, 1 server -> client (a's orientation)
    dir_b: np.ndarray
    flip: np.ndarray               # per pair
    client_on_a: np.ndarray        # per pair
    client_side_known: np.ndarray  # per pair: from timing (else the argument order)
    offset_ns: int
    offset_samples: int
    delay_ns: int                  # median one-way delay between the vantages (-1 unknown)
    tolerance_ns: int


def align(a: Vantage, b: Vantage, pairing: Pairing) -> Alignment:
    """Pair the packets of every matched connection and say of each one seen at one vantage
    only whether it was dropped or created on the path (module doc)."""
    n_pairs = len(pairing.conn_a)
    pair_of_a = np.full(len(a.flows), -1, np.int64)
    pair_of_a[pairing.conn_a] = np.arange(n_pairs)
    pair_of_b = np.full(len(b.flows), -1, np.int64)
    pair_of_b[pairing.conn_b] = np.arange(n_pairs)
    pair_a = pair_of_a[a.pk["conn"]] if len(a.pk["conn"]) else np.zeros(0, np.int64)
    pair_b = pair_of_b[b.pk["conn"]] if len(b.pk["conn"]) else np.zeros(0, np.int64)
    dir_a = (~a.pk["from_client"]).astype(np.int8)
    raw_dir_b = (~b.pk["from_client"]).astype(np.int8)

    ha = _content_hash(a, pair_a, dir_a)
    guessed = (np.asarray(a.flows["orientation_guessed"])[pairing.conn_a]
               | np.asarray(b.flows["orientation_guessed"])[pairing.conn_b])
    flip = _orientation(ha[pair_a >= 0], b, pair_b, raw_dir_b, guessed)
    dir_b = raw_dir_b ^ np.where(pair_b >= 0, flip[np.maximum(pair_b, 0)] if n_pairs else
                                 False, False).astype(np.int8)
    hb = _content_hash(b, pair_b, dir_b)

    partner_a = np.full(len(ha), -1, np.int64)
    partner_b = np.full(len(hb), -1, np.int64)
    rows_a = np.flatnonzero(pair_a >= 0)
    rows_b = np.flatnonzero(pair_b >= 0)
    contested = _pair_equal_groups(ha, rows_a, hb, rows_b, partner_a, partner_b)

    client_host = np.asarray(a.flows.column("client_ip").codes)[pairing.conn_a] \
        if n_pairs else np.zeros(0, np.int64)
    offset, samples, delay, tol, client_on_a, known = _clock(
        a, b, partner_a, pair_a, dir_a, n_pairs, client_host)
    ip_kept = _ip_ids_kept(a, b, partner_a, pair_a, dir_a, n_pairs) if contested else None
    for rows_ka, rows_kb in contested:
        _pair_by_time(rows_ka, rows_kb, a, b, dir_a, pair_a, client_on_a, offset, delay, tol,
                      ip_kept, partner_a, partner_b)

    status_a = _status(partner_a, pair_a, dir_a, client_on_a, True, a.pk["ts_ns"],
                       b.stats.first_ts_ns, offset)
    status_b = _status(partner_b, pair_b, dir_b, client_on_a, False, b.pk["ts_ns"],
                       a.stats.first_ts_ns, -offset)
    cut_a, cut_b = resegmented(a, b, pair_a, pair_b, dir_a, dir_b,
                               (status_a == DROPPED) | (status_a == CREATED),
                               (status_b == DROPPED) | (status_b == CREATED), offset, tol)
    status_a[cut_a] = RESEGMENTED
    status_b[cut_b] = RESEGMENTED
    return Alignment(partner_a, partner_b, status_a, status_b, pair_a, pair_b, dir_a, dir_b,
                     flip, client_on_a, known, offset, samples, delay, tol)


def _content_hash(v: Vantage, pair: np.ndarray, direction: np.ndarray) -> np.ndarray:
    pk = v.pk
    h = mix(np.zeros(len(pair), _U64), pair.astype(_U64))
    for col in (direction, pk["seq"], pk["ack"], pk["flags"], pk["payload_len"], pk["tsval"],
                pk["tsecr"]):
        h = mix(h, np.asarray(col).astype(_U64))
    return h


def _orientation(ha_matched: np.ndarray, b: Vantage, pair_b: np.ndarray, raw_dir_b: np.ndarray,
                 guessed: np.ndarray) -> np.ndarray:
    """Per pair: True when b's client is a's server (a side that saw no handshake guessed
    the orientation differently), i.e. when more of b's segments match a's with the
    directions swapped. A pair whose two sides both saw the SYN or SYN-ACK agree."""
    n_pairs = len(guessed)
    if not guessed.any():
        return np.zeros(n_pairs, np.bool_)
    rows = np.flatnonzero(pair_b >= 0)
    rows = rows[guessed[pair_b[rows]]]
    known, _ = unique_counts(ha_matched)
    votes = []
    for d in (raw_dir_b, raw_dir_b ^ 1):
        h = _content_hash(b, pair_b, d)[rows]
        hit = member(h, known)
        votes.append(np.bincount(pair_b[rows][hit], minlength=n_pairs))
    return votes[1] > votes[0]


def _sorted_groups(h: np.ndarray, rows: np.ndarray):
    """``rows`` grouped by content, each group in capture order (``rows`` ascending)."""
    order = rows[np.argsort(h[rows], kind="stable")]
    keys = h[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) \
        else np.zeros(0, np.int64)
    counts = np.diff(np.concatenate([starts, [len(keys)]]))
    return order, keys[starts] if len(keys) else keys, starts, counts


def _pair_equal_groups(ha, rows_a, hb, rows_b, partner_a, partner_b) -> list:
    """Pair the copies of every content both captures hold equally often, in capture order;
    return the (rows in a, rows in b) of contents held a different number of times."""
    oa, ka, sa, na = _sorted_groups(ha, rows_a)
    ob, kb, sb, nb = _sorted_groups(hb, rows_b)
    pos = np.searchsorted(kb, ka)
    pos_c = np.minimum(pos, max(len(kb) - 1, 0))
    in_b = (pos < len(kb)) & (kb[pos_c] == ka) if len(kb) else np.zeros(len(ka), np.bool_)
    equal = in_b & (nb[pos_c] == na) if len(kb) else in_b
    # rank-wise pairing of equal groups
    g = np.flatnonzero(equal)
    cnt = na[g]
    rank = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    ra = oa[np.repeat(sa[g], cnt) + rank]
    rb = ob[np.repeat(sb[pos_c[g]], cnt) + rank]
    partner_a[ra] = rb
    partner_b[rb] = ra
    contested = []
    for i in np.flatnonzero(in_b & ~equal).tolist():
        j = int(pos_c[i])
        contested.append((oa[sa[i]:sa[i] + na[i]], ob[sb[j]:sb[j] + nb[j]]))
    return contested


def _clock(a, b, partner_a, pair_a, dir_a, n_pairs, client_host):
    """(offset, samples, one-way delay, tolerance, client_on_a, client side known).

    A host is on one side of the path: the side of every connection whose client is
    ``client_host`` (per pair, a code) is decided by the median over those connections, so
    one connection's noisy timing does not put its client on the wrong side."""
    rows = np.flatnonzero(partner_a >= 0)
    client_on_a = np.ones(n_pairs, np.bool_)
    known = np.zeros(n_pairs, np.bool_)
    if not len(rows):
        return 0, 0, -1, TOL_BASE_NS, client_on_a, known
    d = b.pk["ts_ns"][partner_a[rows]] - a.pk["ts_ns"][rows]
    group = pair_a[rows] * 2 + dir_a[rows].astype(np.int64)
    med = _group_median(group, d, 2 * n_pairs).reshape(n_pairs, 2)
    both = ~np.isnan(med).any(axis=1)
    if both.any():
        offset = int(np.median((med[both, 0] + med[both, 1]) / 2))
        asym = med[:, 0] - med[:, 1]
        ev = np.flatnonzero(both)
        n_hosts = int(client_host.max()) + 1
        host_asym = _group_median(client_host[ev], asym[ev], n_hosts)[client_host]
        has = ~np.isnan(host_asym)
        client_on_a = np.where(has, ~(host_asym < 0), True)
        known = has & (host_asym != 0)
        delay = int(np.median(np.abs(asym[both])) / 2)
    else:
        offset, delay = int(np.median(d)), -1
    spread = float(np.percentile(np.abs(d - offset), 99))
    tol = int(min(TOL_CAP_NS, TOL_BASE_NS + 2 * spread))
    return offset, len(rows), delay, tol, client_on_a, known


def _group_median(group: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    order = np.lexsort((values, group))
    g, v = group[order], values[order].astype(np.float64)
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    ends = np.concatenate([starts[1:], [len(g)]])
    lo = (starts + ends - 1) // 2
    hi = (starts + ends) // 2
    out[g[starts]] = (v[lo] + v[hi]) / 2
    return out


def _pair_by_time(rows_a, rows_b, a, b, dir_a, pair_a, client_on_a, offset, delay, tol,
                  ip_kept, partner_a, partner_b) -> None:
    """Copies of one content, held a different number of times: each of the receiver's
    copies, in order, takes one of the sender's copies after the last one taken and sent at
    most ``tol`` after it arrived (times on a's clock): the one with the same IP ID when the
    path evidently keeps IP IDs (``ip_kept`` per pair and direction), else the one whose
    transit time is nearest the one-way ``delay`` seen on the other packets."""
    r0 = int(rows_a[0])
    sender_is_a = (dir_a[r0] == 0) == bool(client_on_a[pair_a[r0]])
    t_a = a.pk["ts_ns"][rows_a].tolist()
    t_b = (b.pk["ts_ns"][rows_b] - offset).tolist()
    by_ip = ip_kept is not None and bool(ip_kept[pair_a[r0] * 2 + dir_a[r0]])
    id_a = a.pk["ip_id"][rows_a].tolist() if by_ip else [0] * len(t_a)
    id_b = b.pk["ip_id"][rows_b].tolist() if by_ip else [0] * len(t_b)
    if sender_is_a:
        send = list(zip(rows_a.tolist(), t_a, id_a))
        recv = list(zip(rows_b.tolist(), t_b, id_b))
    else:
        send = list(zip(rows_b.tolist(), t_b, id_b))
        recv = list(zip(rows_a.tolist(), t_a, id_a))
    transit = max(delay, 0)
    last = -1
    for r, t, ip_id in recv:
        best, best_cost = -1, None
        for i in range(last + 1, len(send)):
            s, ts, sid = send[i]
            if ts > t + tol:
                break
            cost = (sid != ip_id, abs(t - ts - transit))
            if best_cost is None or cost < best_cost:
                best, best_cost = i, cost
        if best < 0:
            continue
        last = best
        s = send[best][0]
        if sender_is_a:
            partner_a[s], partner_b[r] = r, s
        else:
            partner_b[s], partner_a[r] = r, s


def _ip_ids_kept(a: Vantage, b: Vantage, partner_a, pair_a, dir_a, n_pairs) -> np.ndarray | None:
    """Per pair and direction (``pair * 2 + dir``): did every packet paired by content, at
    least two, keep its IP ID across the path? None when a reader gave no IP IDs."""
    if "ip_id" not in a.pk or "ip_id" not in b.pk:
        return None
    rows = np.flatnonzero(partner_a >= 0)
    group = pair_a[rows] * 2 + dir_a[rows].astype(np.int64)
    same = a.pk["ip_id"][rows] == b.pk["ip_id"][partner_a[rows]]
    valid = a.pk["ip_id"][rows] >= 0                 # IPv6: no IP ID
    seen = np.bincount(group[valid], minlength=2 * n_pairs)
    kept = np.bincount(group[valid & same], minlength=2 * n_pairs)
    return (seen >= 2) & (kept == seen)


def _status(partner, pair, direction, client_on_a, is_a, ts, other_first, to_other) -> np.ndarray:
    """Each row's status: seen at both, or (only here) dropped if this vantage is its
    sender's, created if its receiver's; not judged if it came before the other capture's
    first packet (on the other's clock)."""
    status = np.full(len(partner), SEEN_BOTH, np.int8)
    matched = pair >= 0
    status[~matched] = UNMATCHED_CONN
    alone = matched & (partner < 0)
    if not alone.any():
        return status
    client_here = np.where(matched, client_on_a[np.maximum(pair, 0)] if len(client_on_a)
                           else True, True) == is_a
    sent_here = (direction == 0) == client_here
    status[alone & sent_here] = DROPPED
    status[alone & ~sent_here] = CREATED
    if other_first is not None:
        early = alone & (ts + to_other < other_first)
        status[early] = NOT_JUDGED
    return status
