"""Data cut differently at the two vantage points: not a drop, not a creation.

A capture taken on a host with segmentation offload sees the large segments the kernel handed
the NIC (TSO/GSO) or received from it (GRO), while a capture elsewhere on the path sees the
segments on the wire: same bytes, other boundaries, so none of them pairs by content. Such
segments are recognised by their bytes: in one connection and direction, a data segment that
only one capture holds, whose byte range the other capture's unpaired data segments cover
entirely within the pairing tolerance of its time, was resegmented. Only unpaired segments
that close in time cover: a segment dropped on the path and retransmitted an RTO later stays
dropped.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from traceaudit.capture.batch import RST, SYN


def resegmented(a, b, pair_a, pair_b, dir_a, dir_b, alone_a, alone_b, offset_ns: int,
                tol_ns: int) -> tuple:
    """Rows of ``a`` and of ``b`` (unpaired data segments, ``alone_*`` masks) that are
    another cut of bytes the other capture holds unpaired at about the same time (b's clock
    is ``offset_ns`` ahead)."""
    rows = []
    for v, pair, direction, alone in ((a, pair_a, dir_a, alone_a), (b, pair_b, dir_b, alone_b)):
        pk = v.pk
        data = alone & (pk["payload_len"] > 0) & ((pk["flags"] & (SYN | RST)) == 0)
        rows.append(np.flatnonzero(data))
    out_a, out_b = [], []
    if not len(rows[0]) or not len(rows[1]):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    groups_b: dict[tuple[int, int], list[int]] = {}
    for r in rows[1].tolist():
        groups_b.setdefault((int(pair_b[r]), int(dir_b[r])), []).append(r)
    groups_a: dict[tuple[int, int], list[int]] = {}
    for r in rows[0].tolist():
        key = (int(pair_a[r]), int(dir_a[r]))
        if key in groups_b:
            groups_a.setdefault(key, []).append(r)
    for key, ra in groups_a.items():
        rb = groups_b[key]
        base = int(a.pk["seq"][ra[0]])
        ia = _intervals(a, ra, base)
        ib = _intervals(b, rb, base)
        ta = a.pk["ts_ns"][ra].tolist()
        tb = (b.pk["ts_ns"][rb] - offset_ns).tolist()
        out_a += [r for r, iv, t in zip(ra, ia, ta) if _covered(iv, _near(ib, tb, t, tol_ns))]
        out_b += [r for r, iv, t in zip(rb, ib, tb) if _covered(iv, _near(ia, ta, t, tol_ns))]
    return np.array(out_a, np.int64), np.array(out_b, np.int64)


def _near(intervals: list, times: list, t: int, tol: int) -> list:
    """The intervals whose time is within ``tol`` of ``t`` (times ascending)."""
    lo = bisect_right(times, t - tol - 1)
    hi = bisect_right(times, t + tol)
    return intervals[lo:hi]


def _intervals(v, rows: list[int], base: int) -> list[tuple[int, int]]:
    seq = v.pk["seq"][rows].astype(np.int64)
    start = (seq - base) % (1 << 32)
    start = np.where(start >= 1 << 31, start - (1 << 32), start)   # just before base
    return list(zip(start.tolist(), (start + v.pk["payload_len"][rows]).tolist()))


def _covered(iv: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    """Is ``iv`` inside the union of ``others``?"""
    merged: list[list[int]] = []
    for s, e in sorted(others):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    starts = [m[0] for m in merged]
    i = bisect_right(starts, iv[0]) - 1
    return i >= 0 and merged[i][1] >= iv[1]
