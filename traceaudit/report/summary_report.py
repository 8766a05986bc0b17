"""The terminal summary of `traceaudit analyze` (pure: analyses in, text out)."""

from __future__ import annotations

from collections import Counter

from traceaudit.pipeline import CaptureAnalysis


def render(analyses: list[CaptureAnalysis]) -> str:
    lines = []
    roles: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    packets = conns = 0
    for a in analyses:
        st = a.stats
        status = "damaged" if st.error else "ok"
        lines.append(f"{st.path}: {st.packets} packets, {st.tcp_packets} TCP, {len(a.flows)} "
                     f"connections ({status})")
        packets += st.packets
        conns += len(a.flows)
        roles.update(a.flows["close_role"].tolist() if len(a.flows) else [])
        kinds.update(a.flows["close_kind"].tolist() if len(a.flows) else [])
    lines.append(f"total: {len(analyses)} capture(s), {packets} packets, {conns} connections")
    if conns:
        lines.append("closed by: " + ", ".join(f"{k} {v}" for k, v in sorted(roles.items())))
        lines.append("endings:   " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    return "\n".join(lines) + "\n"
