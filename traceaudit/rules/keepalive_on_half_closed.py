"""keepalive-on-half-closed: keepalive probes keep a half-closed connection alive."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View
from traceaudit.rules.model import Rule, Severity


def check(analysis, params):
    v = View.of(analysis)
    out = []
    for e in (0, 1) if v.n else ():
        p = 1 - e
        hit = v.ep(e, "keepalives_half_closed") >= int(params["min_probes"])
        for c in np.flatnonzero(hit).tolist():
            me = v.row(c, e)
            probes = me["keepalives_half_closed"]
            if me["got_fin"] == 1 and me["fin_sent"] == 0:
                fin = me["got_fin_frame"]
                side = f"in CLOSE_WAIT since the {ENDPOINTS[p]}'s FIN (frame {fin})"
            else:
                fin = me["fin_frame"]
                side = f"after its own FIN (frame {fin})"
            message = (f"{ENDPOINTS[e]} {v.address(c, e)} sent {probes} keepalive probe(s) "
                       f"{side}: the {ENDPOINTS[p]} answers them, so keepalive never "
                       f"detects that this connection is finished and it stays half-closed "
                       f"indefinitely. Last probe by frame {me['last_frame']}.")
            out.append(v.finding(RULE, c, e, me["last_ns"], [fin, me["last_frame"]], message,
                                 {"keepalive_probes": probes}))
    return out


#: nothing of other connections: a flat read runs it a chunk at a time (``retire/flat.py``)
TOTALS: dict = {}


RULE = Rule(
    code="TA113",
    name="keepalive-on-half-closed",
    title="Keepalives on a half-closed connection",
    severity=Severity.WARNING,
    rationale=("TCP keepalive exists to find dead peers. On a half-closed connection the peer "
               "is alive and answers every probe, so keepalive keeps the connection (often a "
               "leaked CLOSE_WAIT and the peer's FIN_WAIT_2) open forever instead of ending it."),
    remediation=("Fix the endpoint that never closes (see half-closed-leak); keepalive is no "
                 "substitute for close() on EOF. Use application-level idle timeouts."),
    check=check,
    thresholds={"min_probes": 1},
    threshold_help={"min_probes": "keepalive probes sent while half-closed"},
    references=("RFC 1122 §4.2.3.6 (TCP keep-alives)", "RFC 9293 §3.8.4"),
)
