"""Ladder diagrams (hand-drawn SVG): client and server columns, one arrow per kept packet, each
side's state written beside its column where it changes, elided stretches marked.

Everything comes from the analysis (``excerpts`` and ``events``); every text is escaped.
Styles live in the report's stylesheet (classes ``lad-*``); the arrowheads are markers defined
once per page (``LADDER_DEFS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from markupsafe import Markup, escape

from traceaudit.capture.batch import FIN, RST, SYN
from traceaudit.tracking.excerpts import Packet
from traceaudit.tracking.states import REASON_TEXT, EndpointState, Reason
from traceaudit.tracking.tracker import EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE, EV_TS

W = 760
X_CLIENT, X_SERVER = 250, 560
ROW, GAP_ROW, HEAD_ROW = 30, 24, 34
_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "AE")
_BAD = {EndpointState.CLOSE_WAIT, EndpointState.FIN_WAIT_2, EndpointState.TIME_WAIT,
        EndpointState.LAST_ACK, EndpointState.SYN_RECEIVED, EndpointState.CLOSING}

LADDER_DEFS = Markup(
    '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
    '<marker id="lad-ah" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" '
    'markerHeight="8" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
    '<path d="M0,0L10,5L0,10z" '
    'fill="context-stroke"/></marker></defs></svg>')


@dataclass
class _Change:
    endpoint: int
    state: str
    why: str
    frame: int
    ts_ns: int


@dataclass
class _Row:
    kind: str                         # "pkt", "gap" or "timer"
    packet: Packet | None = None
    skipped: int = 0
    first: int = 0                    # gap: first and last frame not kept
    last: int = 0
    ts_ns: int = 0
    changes: list[_Change] = field(default_factory=list)


def flag_text(flags: int) -> str:
    return _FLAG_TEXT[flags & 0x1FF]


_FLAG_TEXT = [", ".join(n for i, n in enumerate(_FLAG_NAMES) if f >> i & 1) for f in range(512)]
_STATE_NAME = {int(s): s.name for s in EndpointState}
_WHY = {int(r): REASON_TEXT.get(r, "") for r in Reason}
_BAD_NAMES = {s.name for s in _BAD}


def connection_changes(ev: np.ndarray) -> list[_Change]:
    """State changes of both endpoints in time order, from one connection's event rows."""
    ev = ev[np.lexsort((ev[:, EV_ENDPOINT], ev[:, EV_TS]))]
    out = []
    for e, ts, fr, st, why in ev[:, [EV_ENDPOINT, EV_TS, EV_FRAME, EV_STATE, EV_REASON]].tolist():
        out.append(_Change(e, _STATE_NAME[st], _WHY.get(why, ""), fr, ts))
    return out


def _rows(packets: list[Packet], changes: list[_Change], total: int) -> list[_Row]:
    rows: list[_Row] = []
    prev = None
    for p in packets:
        if prev is not None and p.idx > prev.idx + 1:
            rows.append(_Row("gap", skipped=p.idx - prev.idx - 1, first=prev.frame + 1,
                             last=p.frame - 1, ts_ns=prev.ts_ns))
        rows.append(_Row("pkt", packet=p, ts_ns=p.ts_ns))
        prev = p
    if prev is not None and total > prev.idx + 1:
        rows.append(_Row("gap", skipped=total - prev.idx - 1, first=prev.frame + 1,
                         last=-1, ts_ns=prev.ts_ns))
    by_frame = {r.packet.frame: r for r in rows if r.kind == "pkt"}
    for ch in changes:
        if ch.frame in by_frame:
            by_frame[ch.frame].changes.append(ch)
            continue
        gap = next((r for r in rows if r.kind == "gap" and ch.frame >= 0 and
                    r.first <= ch.frame and (r.last < 0 or ch.frame <= r.last)), None)
        if gap is not None:
            gap.changes.append(ch)
            continue
        # timer (no frame) or a frame we know nothing about: place it by time
        at = next((i for i, r in enumerate(rows) if r.ts_ns > ch.ts_ns), len(rows))
        if at > 0 and rows[at - 1].kind == "timer" and rows[at - 1].ts_ns == ch.ts_ns:
            rows[at - 1].changes.append(ch)
        else:
            rows.insert(at, _Row("timer", ts_ns=ch.ts_ns, changes=[ch]))
    return rows


def _fmt_dt(ns: int) -> str:
    s = ns / 1e9
    if abs(s) < 1:
        return f"{s * 1000:.3f} ms"
    return f"{s:.3f} s" if abs(s) < 100 else f"{s:.1f} s"


def ladder_svg(packets: list[Packet], changes: list[_Change], total: int, client: str,
               server: str, highlight: set[int] = frozenset(),
               end: tuple[int, str, str] | None = None) -> Markup:
    """The ladder of one connection: ``total`` is how many packets it had in all; ``end`` is
    (capture end, client state, server state) for a closing line."""
    rows = _rows(packets, changes, total)
    t0 = packets[0].ts_ns if packets else (rows[0].ts_ns if rows else 0)
    out: list[str] = []
    y = HEAD_ROW
    for r in rows:
        h = ROW if r.kind == "pkt" else GAP_ROW
        if r.kind == "pkt":
            out.append(packet_arrow(r.packet, y, t0, r.packet.frame in highlight))
        elif r.kind == "gap":
            more = "" if r.last < 0 else f", frames {r.first}–{r.last}"
            text = f"⋯ {r.skipped} packet{'s' if r.skipped != 1 else ''} not kept{more} ⋯"
            out.append(f'<g class="lad-gap"><rect x="{X_CLIENT - 6}" y="{y + 2}" '
                       f'width="{X_SERVER - X_CLIENT + 12}" height="{GAP_ROW - 4}" rx="3"/>'
                       f'<text x="{(X_CLIENT + X_SERVER) // 2}" y="{y + 16}">'
                       f'{escape(text)}</text></g>')
        else:
            out.append(f'<text class="lad-t" x="4" y="{y + 15}">'
                       f'{escape(_fmt_dt(r.ts_ns - t0))}</text>'
                       f'<text class="lad-timer" x="{(X_CLIENT + X_SERVER) // 2}" '
                       f'y="{y + 15}">⏱ timer (no packet)</text>')
        out.extend(_states(r.changes, y, h))
        y += h
    if end is not None:
        ts, cs, ss = end
        out.append(f'<line class="lad-end" x1="{X_CLIENT - 40}" x2="{X_SERVER + 40}" '
                   f'y1="{y + 6}" y2="{y + 6}"/><text class="lad-t" x="4" y="{y + 10}">'
                   f'{escape(_fmt_dt(ts - t0))}</text><text class="lad-timer" '
                   f'x="{(X_CLIENT + X_SERVER) // 2}" y="{y + 20}">'
                   'capture ends; states then</text>')
        out.extend(_states([_Change(0, cs, "state at capture end", -1, ts),
                            _Change(1, ss, "state at capture end", -1, ts)], y + 4, GAP_ROW))
        y += GAP_ROW + 4
    return ladder_frame(out, y + 8, client, server)


def ladder_frame(body: list[str], height: int, client: str, server: str) -> Markup:
    """The ladder's SVG around its rows ``body``: the two hosts' heads and lifelines."""
    lines = (f'<line class="lad-life" x1="{X_CLIENT}" y1="{HEAD_ROW - 6}" x2="{X_CLIENT}" '
             f'y2="{height}"/><line class="lad-life" x1="{X_SERVER}" y1="{HEAD_ROW - 6}" '
             f'x2="{X_SERVER}" y2="{height}"/>')
    head = (f'<text class="lad-host" x="{X_CLIENT}" y="14">client {escape(client)}</text>'
            f'<text class="lad-host" x="{X_SERVER}" y="14">server {escape(server)}</text>'
            f'<text class="lad-t" x="4" y="14">frame · time</text>')
    return Markup(f'<svg class="ladder" viewBox="0 0 {W} {height}" width="{W}" '
                  f'height="{height}" role="img" aria-label="ladder diagram">'
                  + head + lines + "".join(body) + "</svg>")


def packet_arrow(p: Packet, y: int, t0: int, hit: bool) -> str:
    """One packet's row: frame, time, label and the arrow between the two columns."""
    x1, x2 = (X_SERVER, X_CLIENT) if p.from_server else (X_CLIENT, X_SERVER)
    kind = "rst" if p.flags & RST else "syn" if p.flags & SYN else "fin" if p.flags & FIN \
        else "data" if p.payload_len else "ack"
    cls = f"lad-p lad-{kind}" + (" lad-hit" if hit else "")
    label = f"[{flag_text(p.flags)}] Seq={p.rel_seq}"
    if p.flags & 0x10:
        label += f" Ack={p.rel_ack}"
    label += f" Len={p.payload_len} Win={p.win}"
    tip = (f"frame {p.frame}: {'server → client' if p.from_server else 'client → server'}, "
           f"raw seq {p.seq}, raw ack {p.ack}")
    mid = (X_CLIENT + X_SERVER) // 2
    # (tip, time and label are numbers and fixed words: nothing in them to escape)
    return (f'<g class="{cls}"><title>{tip}</title>'
            f'<text class="lad-t" x="4" y="{y + 13}">#{p.frame}</text>'
            f'<text class="lad-t lad-dt" x="4" y="{y + 25}">{_fmt_dt(p.ts_ns - t0)}</text>'
            f'<text class="lad-lbl" x="{mid}" y="{y + 10}">{label}</text>'
            f'<line x1="{x1}" y1="{y + 14}" x2="{x2}" y2="{y + 24}" marker-end="url(#lad-ah)"/>'
            f'</g>')


def _states(changes: list[_Change], y: int, h: int) -> list[str]:
    """Each endpoint's new state(s) beside its column (several at one frame: A → B)."""
    out = []
    if not changes:
        return out
    for e in (0, 1):
        spans = []
        for c in changes:
            if c.endpoint != e:
                continue
            bad = ' class="lad-bad"' if c.state in _BAD_NAMES else ""
            tip = f"{'client' if e == 0 else 'server'} → {c.state}: {c.why}"
            if c.frame < 0:
                tip += " (no packet: timer or inference)"
            sep = "→ " if spans else ""
            # (a state's name is one of ours, an identifier: nothing to escape)
            spans.append(f'<tspan{bad}>{sep}{c.state}<title>{escape(tip)}</title></tspan>')
        if spans:
            x, anchor = (X_CLIENT - 8, "end") if e == 0 else (X_SERVER + 8, "start")
            out.append(f'<text class="lad-st" x="{x}" y="{y + 17}" text-anchor="{anchor}">'
                       + " ".join(spans) + "</text>")
    return out
