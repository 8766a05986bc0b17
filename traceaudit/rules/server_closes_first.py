"""server-closes-first: servers that send the first FIN collect the TIME_WAIT sockets.

One finding per service (server ip:port) per capture, naming the first such connection and
counting the rest: thousands of identical per-connection notes would bury everything else.
"""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import View
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking.states import Closer

EXAMPLES = 10


def check(analysis, params):
    v = View.of(analysis)
    if not v.n:
        return []
    guessed = np.asarray(analysis.table["orientation_guessed"], bool)
    hit = np.flatnonzero((v.conn("closer") == Closer.SERVER) & (v.ep(1, "fin_sent") == 1) &
                         (v.ep(1, "fin_frame") == v.conn("close_frame")) & ~guessed)
    if not len(hit):
        return []
    services = v.service_codes(1)
    by_code: dict[int, list[int]] = {}
    for c, code in zip(hit.tolist(), services[hit].tolist()):
        by_code.setdefault(code, []).append(c)
    every = np.sort(services)
    codes = np.array(list(by_code), np.int64)
    counts = np.searchsorted(every, codes, "right") - np.searchsorted(every, codes, "left")
    by_service = {v.address(conns[0], 1): conns for conns in by_code.values()}
    totals = dict(zip(by_service, counts.tolist()))
    fin_frames, fin_ts = v.ep(1, "fin_frame"), v.ep(1, "fin_ns")
    tw_frames = v.ep(1, "tw_frame")
    out = []
    for service, conns in by_service.items():
        first = conns[0]
        n, total = len(conns), totals[service]
        frames = [int(fin_frames[c]) for c in conns[:EXAMPLES]]
        tw = int(tw_frames[first])
        held = f", TIME_WAIT from frame {tw}" if tw >= 0 else ""
        ip, port = v.ip(first, 1), v.columns["server_port"][first]
        field = "ipv6" if ":" in ip else "ip"
        message = (f"server {service} closed first on {n:,} of its {total:,} connection(s) in "
                   f"this capture (first: tcp.stream {first}, FIN frame {frames[0]}{held}): "
                   f"the server, not its clients, holds their TIME_WAIT sockets for 2×MSL.")
        finding = v.finding(RULE, first, 1, int(fin_ts[first]), frames, message,
                            {"connections": n, "service_connections": total,
                             "example_connections": conns[:EXAMPLES]},
                            key=f"service {service}")
        finding.display_filter = (f"{field}.src == {ip} && tcp.srcport == {port} && "
                                  f"tcp.flags.fin == 1")
        out.append(finding)
    return out


RULE = Rule(
    code="TA112",
    name="server-closes-first",
    title="Server closes first and collects TIME_WAIT",
    severity=Severity.INFO,
    rationale=("The side that sends the first FIN ends in TIME_WAIT for 2×MSL (60 s on Linux). "
               "When a busy server closes its short connections first it holds one TIME_WAIT "
               "socket per connection; clients that reuse their ports then meet the server's "
               "TIME_WAIT (see time-wait-reuse)."),
    remediation=("Let clients close first where the protocol allows (HTTP: clients closing "
                 "idle keep-alive connections before the server's timeout; 'Connection: close' "
                 "sent by the client). Otherwise this is expected; watch time-wait-pileup."),
    check=check,
    references=("RFC 9293 §3.6.1 (TIME-WAIT)", "RFC 6191 (reducing TIME-WAIT state)"),
)
