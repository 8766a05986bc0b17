"""`traceaudit states --at`: every endpoint's state at one moment (pure: analysis in, text out)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from traceaudit.pipeline import CaptureAnalysis
from traceaudit.tracking.connections import state_names
from traceaudit.tracking.timeline import states_at

HIDDEN = {"UNSEEN", "CLOSED"}


def render(analysis: CaptureAnalysis, ts_ns: int, show_all: bool = False) -> str:
    flows = analysis.flows
    at = states_at(analysis.events, len(flows), ts_ns)
    when = datetime.fromtimestamp(ts_ns / 1e9, timezone.utc).isoformat(timespec="microseconds")
    start = analysis.stats.first_ts_ns or ts_ns
    lines = [f"{analysis.stats.path} at {when} ({(ts_ns - start) / 1e9:+.6f} s from the first "
             f"packet)"]
    rows = []
    census: Counter[str] = Counter()
    names = [state_names(at[:, 0]).tolist(), state_names(at[:, 1]).tolist()]
    for i, row in enumerate(flows.itertuples(index=False)):
        for e, side in enumerate(("client", "server")):
            state = names[e][i]
            if state == "UNSEEN" or (state == "CLOSED" and not show_all):
                continue
            census[state] += 1
            local = _ep(row.client_ip, row.client_port) if e == 0 else _ep(row.server_ip,
                                                                          row.server_port)
            peer = _ep(row.server_ip, row.server_port) if e == 0 else _ep(row.client_ip,
                                                                         row.client_port)
            rows.append((state, local, peer, side, str(row.id)))
    if not rows:
        lines.append("no endpoint holds connection state at that moment")
        return "\n".join(lines) + "\n"
    header = ("State", "Local Address:Port", "Peer Address:Port", "Role", "Conn")
    widths = [max(len(r[k]) for r in rows + [header]) for k in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*header))
    lines.extend(fmt.format(*r) for r in rows)
    lines.append("census: " + ", ".join(f"{s} {n}" for s, n in sorted(census.items())))
    return "\n".join(lines) + "\n"


def _ep(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
