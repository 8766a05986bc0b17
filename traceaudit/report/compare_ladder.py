"""Both vantage points of one connection as two ladder diagrams with the same rows: a packet
seen at both is on one row of each; a packet dropped on the path is drawn at its sender's
vantage with an empty row opposite, a packet created on the path at its receiver's. Rows are
in time order on capture a's clock (b's times less the clock offset). Long stretches of
packets seen at both are elided around the differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from markupsafe import Markup, escape

from traceaudit.compare import Comparison, ConnectionPair
from traceaudit.compare.align import CREATED, DROPPED, NOT_JUDGED, RESEGMENTED
from traceaudit.report.ladder import (GAP_ROW, HEAD_ROW, ROW, W, X_CLIENT, X_SERVER,
                                      ladder_frame, packet_arrow)
from traceaudit.tracking.excerpts import Packet

#: packets kept around each difference, at the start and at the end; rows drawn at most
CONTEXT, EDGE, MAX_ROWS = 3, 3, 160

_KIND = {DROPPED: "dropped", CREATED: "created", NOT_JUDGED: "unjudged",
         RESEGMENTED: "resegmented"}
_ABSENT = {DROPPED: "not seen here: dropped on the path",
           CREATED: "not seen here: created on the path",
           NOT_JUDGED: "not seen here: this capture had not begun",
           RESEGMENTED: "its bytes are here in other segments (offload)"}
_BADGE = {"dropped": "dropped on the path", "created": "created on the path",
          "resegmented": "cut differently"}


@dataclass
class _Entry:
    t_ns: int          # on a's clock
    row_a: int         # -1: not in a
    row_b: int
    status: int        # of the row that exists alone (0 for a packet seen at both)


def entries(c: Comparison, pair: ConnectionPair) -> list[_Entry]:
    al = c.alignment
    rows_a = c.a.rows_of(pair.conn_a)
    rows_b = c.b.rows_of(pair.conn_b)
    out = [_Entry(int(c.a.pk["ts_ns"][r]), r, int(al.partner_a[r]), int(al.status_a[r]))
           for r in rows_a.tolist()]
    out += [_Entry(int(c.b.pk["ts_ns"][r]) - al.offset_ns, -1, r, int(al.status_b[r]))
            for r in rows_b.tolist() if al.partner_b[r] < 0]
    out.sort(key=lambda e: (e.t_ns, e.row_a if e.row_a >= 0 else 1 << 62))
    return out


def _kept(items: list[_Entry]) -> list[_Entry | int]:
    """The entries drawn, with the number of entries elided between them as ints."""
    n = len(items)
    keep = np.zeros(n, np.bool_)
    keep[:EDGE] = True
    keep[max(0, n - EDGE):] = True
    for i, e in enumerate(items):
        if e.row_a < 0 or e.row_b < 0:
            keep[max(0, i - CONTEXT):i + CONTEXT + 1] = True
    # a lone packet between two kept ones is drawn: a gap row would be no shorter
    lone = np.flatnonzero(~keep[1:-1] & keep[:-2] & keep[2:]) + 1
    keep[lone] = True
    out: list[_Entry | int] = []
    skipped = 0
    drawn = 0
    for i, e in enumerate(items):
        if keep[i] and drawn < MAX_ROWS:
            if skipped:
                out.append(skipped)
                skipped = 0
            out.append(e)
            drawn += 1
        else:
            skipped += 1
    if skipped:
        out.append(skipped)
    return out


def side_by_side(c: Comparison, pair: ConnectionPair) -> tuple[Markup, Markup]:
    """The two SVGs (a's, b's), rows aligned."""
    items = entries(c, pair)
    shown = _kept(items)
    base = _bases(c, items)
    svgs = []
    for side in ("a", "b"):
        v = c.a if side == "a" else c.b
        direction = c.alignment.dir_a if side == "a" else c.alignment.dir_b
        offset = 0 if side == "a" else c.alignment.offset_ns
        t0 = items[0].t_ns + offset if items else 0
        out, y = [], HEAD_ROW
        for e in shown:
            if isinstance(e, int):
                out.append(_gap(e, y))
                y += GAP_ROW
                continue
            row = e.row_a if side == "a" else e.row_b
            if row >= 0:
                p = _as_packet(v, row, int(direction[row]), base)
                kind = _KIND.get(e.status, "") if (e.row_a < 0 or e.row_b < 0) else ""
                out.append(_mark(kind, y, _BADGE.get(kind, "")))
                out.append(packet_arrow(p, y, t0, bool(kind)))
            else:
                out.append(_absent(e.status, y))
            y += ROW
        client = pair.client_a if side == "a" else pair.client_b
        server = pair.server_a if side == "a" else pair.server_b
        svgs.append(ladder_frame(out, y + 8, client, server))
    return svgs[0], svgs[1]


def _bases(c: Comparison, items: list[_Entry]) -> tuple[int, int]:
    """Each direction's first sequence number (the ISN when the SYN was seen), for relative
    numbers that are the same in both diagrams."""
    base = [None, None]
    for e in items:
        for v, row, d in ((c.a, e.row_a, c.alignment.dir_a), (c.b, e.row_b, c.alignment.dir_b)):
            if row >= 0 and base[int(d[row])] is None:
                base[int(d[row])] = int(v.pk["seq"][row])
    return base[0] or 0, base[1] or 0


def _as_packet(v, row: int, direction: int, base: tuple[int, int]) -> Packet:
    pk = v.pk
    seq, ack = int(pk["seq"][row]), int(pk["ack"][row])
    return Packet(idx=0, frame=int(pk["frame"][row]), ts_ns=int(pk["ts_ns"][row]),
                  from_server=direction == 1, flags=int(pk["flags"][row]), seq=seq, ack=ack,
                  rel_seq=(seq - base[direction]) & 0xFFFFFFFF,
                  rel_ack=(ack - base[1 - direction]) & 0xFFFFFFFF,
                  payload_len=int(pk["payload_len"][row]), win=int(pk["win"][row]))


def _mark(kind: str, y: int, badge: str) -> str:
    if not kind:
        return ""
    text = (f'<text class="cmp-badge" x="{W - 4}" y="{y + 20}">{escape(badge)}</text>'
            if badge else "")
    return f'<rect class="cmp-{kind}" x="0" y="{y}" width="{W}" height="{ROW}"/>' + text


def _absent(status: int, y: int) -> str:
    kind = _KIND.get(status, "")
    return (f'<g class="cmp-absent cmp-absent-{kind}"><rect x="{X_CLIENT}" y="{y + 6}" '
            f'width="{X_SERVER - X_CLIENT}" height="{ROW - 10}" rx="3"/>'
            f'<text x="{(X_CLIENT + X_SERVER) // 2}" y="{y + 19}">'
            f'{escape(_ABSENT.get(status, "not seen here"))}</text></g>')


def _gap(n: int, y: int) -> str:
    text = f"⋯ {n} packet{'s' if n != 1 else ''} seen at both ⋯"
    return (f'<g class="lad-gap"><rect x="{X_CLIENT - 6}" y="{y + 2}" '
            f'width="{X_SERVER - X_CLIENT + 12}" height="{GAP_ROW - 4}" rx="3"/>'
            f'<text x="{(X_CLIENT + X_SERVER) // 2}" y="{y + 16}">{escape(text)}</text></g>')
