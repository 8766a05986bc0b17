"""lost-final-ack: the passive closer had to retransmit its FIN."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking.states import Hindsight


def check(analysis, params):
    v = View.of(analysis)
    out = []
    for e in (0, 1) if v.n else ():
        passive = ((v.ep(e, "got_fin_frame") >= 0) &
                   (v.ep(e, "got_fin_frame") < v.ep(e, "fin_frame")) &
                   ((v.ep(e, "hindsight") & Hindsight.FINS_CROSSED) == 0))
        hits = np.flatnonzero(passive & (v.ep(e, "fin_count") > 1) &
                              (v.ep(e, "fin_retx_frame") >= 0))
        out += _findings(v, hits, e)
    return out


def _findings(v: View, hits: np.ndarray, e: int):
    me, peer = ENDPOINTS[e], ENDPOINTS[1 - e]
    fin, retx, count, fin_ts, flags = v.take(hits, e, "fin_frame", "fin_retx_frame",
                                             "fin_count", "fin_ns", "hindsight")
    conns = hits.tolist()
    addrs = v.addresses(hits, e)
    messages, details = [], []
    for i, c in enumerate(conns):
        ack_lost = bool(flags[i] & Hindsight.FIN_ACK_LOST)
        seen = (" The capture shows the ACK, so it was lost between the capture point and "
                f"the {me}." if ack_lost else
                " No ACK of it was captured: the FIN or its ACK was lost.")
        messages.append(
            f"{me} {addrs[i]} closed second (FIN frame {fin[i]}) and had to retransmit "
            f"its FIN (frame {retx[i]}, {count[i]} transmissions in all): the {peer}'s final "
            f"ACK did not reach it, so it stayed in LAST_ACK.{seen}")
        details.append({"fin_transmissions": count[i], "ack_captured": ack_lost})
    return v.findings(RULE, conns, e, fin_ts, [list(f) for f in zip(fin, retx)], messages,
                      details)


#: nothing of other connections: a flat read runs it a chunk at a time (``retire/flat.py``)
TOTALS: dict = {}


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
