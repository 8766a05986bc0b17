"""simultaneous-close: both FINs crossed on the wire (both endpoints go through CLOSING)."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import View
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking import kernel as K


def check(analysis, params):
    v = View.of(analysis)
    out = []
    for c in (np.flatnonzero(v.conn(K.K_CLOSER) == 2).tolist() if v.n else []):
        t = v.row(c)
        f0, f1 = int(t[K.E_FIN_FRAME]), int(t[K.NE + K.E_FIN_FRAME])
        message = (f"both endpoints sent FIN before seeing the other's (client frame {f0}, "
                   f"server frame {f1}): a simultaneous close. Both go through CLOSING and "
                   f"both end in TIME_WAIT, so each side holds a TIME_WAIT socket.")
        out.append(v.finding(RULE, c, None, int(min(t[K.E_FIN_TS], t[K.NE + K.E_FIN_TS])),
                             [f0, f1], message))
    return out


RULE = Rule(
    code="TA108",
    name="simultaneous-close",
    title="Simultaneous close: the FINs crossed",
    severity=Severity.INFO,
    rationale=("When both applications close at the same moment the FINs cross; RFC 9293 "
               "handles it (FIN_WAIT_1 → CLOSING → TIME_WAIT on both sides), but both hosts "
               "then hold TIME_WAIT. Frequent simultaneous closes point at a protocol where "
               "neither side is clearly responsible for closing."),
    remediation=("Usually nothing to fix. If TIME_WAIT pressure matters, let one side (the "
                 "client) close first by protocol, e.g. the server waits for the client's FIN."),
    check=check,
    references=("RFC 9293 §3.6 (simultaneous close, figure 13)",),
)
