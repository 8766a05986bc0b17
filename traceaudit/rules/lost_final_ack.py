"""lost-final-ack: the passive closer had to retransmit its FIN."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking import kernel as K


def check(analysis, params):
    v = View.of(analysis)
    out = []
    for e in (0, 1) if v.n else ():
        p = 1 - e
        passive = ((v.ep(e, K.E_GOT_FIN_FRAME) >= 0) &
                   (v.ep(e, K.E_GOT_FIN_FRAME) < v.ep(e, K.E_FIN_FRAME)) &
                   ((v.ep(e, K.E_FLAGS) & K.F_FINS_CROSSED) == 0))
        hit = passive & (v.ep(e, K.E_FIN_COUNT) > 1) & (v.ep(e, K.E_FIN_RETX_FRAME) >= 0)
        for c in np.flatnonzero(hit).tolist():
            t = v.row(c)
            eo = e * K.NE
            fin, retx = int(t[eo + K.E_FIN_FRAME]), int(t[eo + K.E_FIN_RETX_FRAME])
            ack_lost = bool(t[eo + K.E_FLAGS] & K.F_ACK_LOST)
            seen = (" The capture shows the ACK, so it was lost between the capture point and "
                    f"the {ENDPOINTS[e]}." if ack_lost else
                    " No ACK of it was captured: the FIN or its ACK was lost.")
            message = (f"{ENDPOINTS[e]} {v.address(c, e)} closed second (FIN frame {fin}) and "
                       f"had to retransmit its FIN (frame {retx}, {int(t[eo + K.E_FIN_COUNT])} "
                       f"transmissions in all): the {ENDPOINTS[p]}'s final ACK did not reach it, "
                       f"so it stayed in LAST_ACK.{seen}")
            out.append(v.finding(RULE, c, e, int(t[eo + K.E_FIN_TS]), [fin, retx], message,
                                 fin_transmissions=int(t[eo + K.E_FIN_COUNT]),
                                 ack_captured=ack_lost))
    return out


RULE = Rule(
    code="TA109",
    name="lost-final-ack",
    title="Lost final ACK: the passive closer retransmitted its FIN",
    severity=Severity.INFO,
    rationale=("The last ACK of a close is what lets the passive closer leave LAST_ACK; it is "
               "not retransmitted by itself, only re-sent when the FIN comes again. A "
               "retransmitted FIN means that ACK (or the FIN) was lost: harmless when the "
               "active closer is still in TIME_WAIT and answers again, an RST (see "
               "rst-after-premature-close) when it is not."),
    remediation=("Occasional: packet loss, nothing to fix. Frequent: look for loss on the path "
                 "(interface drops, an overloaded middlebox) or a firewall that forgets "
                 "connections at the first FIN."),
    check=check,
    references=("RFC 9293 §3.6 (closing)", "RFC 9293 §3.10.7.4 (LAST-ACK)"),
)
