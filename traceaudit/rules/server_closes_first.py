"""server-closes-first: the server sent the first FIN, so the server collects TIME_WAIT."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import View
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking import kernel as K


def check(analysis, params):
    v = View(analysis)
    if not v.n:
        return []
    guessed = analysis.flows["orientation_guessed"].to_numpy(dtype=bool)
    hit = ((v.conn(K.K_CLOSER) == 1) & (v.ep(1, K.E_FIN) == 1) &
           (v.ep(1, K.E_FIN_FRAME) == v.conn(K.K_CLOSE_FRAME)) & ~guessed)
    out = []
    for c in np.flatnonzero(hit).tolist():
        t = v.trk[c]
        fin = int(t[K.NE + K.E_FIN_FRAME])
        tw = int(t[K.NE + K.E_TW_FRAME])
        held = (f"; it entered TIME_WAIT at frame {tw}" if tw >= 0 else "")
        message = (f"server {v.address(c, 1)} closed first (FIN frame {fin}) before client "
                   f"{v.address(c, 0)}: the server, not the client, holds this connection's "
                   f"TIME_WAIT (2×MSL){held}. With many short connections the server collects "
                   f"the TIME_WAIT sockets.")
        out.append(v.finding(RULE, c, 1, int(t[K.NE + K.E_FIN_TS]), [fin, tw], message))
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
