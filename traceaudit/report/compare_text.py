"""What every ``compare`` output says the same way: a path packet in words, the Wireshark
display filters, times."""

from __future__ import annotations

from traceaudit.compare import Comparison, ConnectionPair, PathPacket
from traceaudit.names import display_name
from traceaudit.report.ladder import flag_text


def packet_text(p: PathPacket) -> str:
    """``[RST, ACK] seq=… ack=… len=0`` (raw numbers, as in the captures), and the doubt
    when the other capture had no packet after it."""
    ack = f" ack={p.ack}" if p.flags & 0x10 else ""
    ts = f" TSval={p.tsval}" if p.tsval is not None else ""
    late = f" ({late_text(p)})" if p.after_other_end else ""
    return f"[{flag_text(p.flags)}] seq={p.seq}{ack} len={p.payload_len}{ts}{late}"


def late_text(p: PathPacket) -> str:
    """The doubt about a path packet after the other capture's last packet."""
    other = "b" if p.seen_in == "a" else "a"
    return f"{other} has no packet after it: {other} may have stopped capturing first"


def frames_filter(pair: ConnectionPair, side: str) -> str:
    """The display filter that shows, in capture ``side``, the connection's packets the
    other capture does not have (or the whole connection when there are none)."""
    conn = pair.conn_a if side == "a" else pair.conn_b
    frames = sorted(p.frame for p in (*pair.dropped, *pair.created) if p.seen_in == side)
    base = f"tcp.stream eq {conn}"
    if not frames:
        return base
    return f"{base} && frame.number in {{{', '.join(map(str, frames))}}}"


def side_name(c: Comparison, side: str) -> str:
    return display_name((c.a if side == "a" else c.b).path)


def translation(pair: ConnectionPair) -> str:
    """``a's client -> b's client`` (and the server's when it differs); '' when none."""
    parts = []
    if pair.client_a != pair.client_b:
        parts.append(f"{pair.client_a} -> {pair.client_b}")
    if pair.server_a != pair.server_b:
        parts.append(f"server {pair.server_a} -> {pair.server_b}")
    return ", ".join(parts)


def fmt_ns(ns: int) -> str:
    s = ns / 1e9
    if abs(ns) < 1000:
        return f"{ns} ns"
    if abs(s) < 1e-3:
        return f"{ns / 1e3:.0f} µs"
    if abs(s) < 1:
        return f"{s * 1e3:.3f} ms"
    return f"{s:.3f} s"
