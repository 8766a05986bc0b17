"""connection-refused: the SYN was answered by RST, no SYN-ACK."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import View
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking import kernel as K


def check(analysis, params):
    v = View.of(analysis)
    if not v.n:
        return []
    hit = np.flatnonzero(v.conn(K.K_REFUSED) == 1)
    first = analysis.table["client_first_frame"]
    out = []
    for c in hit.tolist():
        t = v.row(c)
        rst, syns = int(t[K.NE + K.E_RST_FRAME]), int(t[K.E_SYN_COUNT])
        tries = f" after {syns} SYN transmissions" if syns > 1 else ""
        message = (f"server {v.address(c, 1)} refused the connection from client "
                   f"{v.address(c, 0)}: the SYN (frame {first[c]}) was answered by RST "
                   f"(frame {rst}){tries}. Nothing was listening on port "
                   f"{v.columns['server_port'][c]} (or a firewall rejects with tcp-reset, or "
                   f"the listen backlog overflowed with tcp_abort_on_overflow).")
        out.append(v.finding(RULE, c, 1, int(t[K.NE + K.E_RST_TS]), [int(first[c]), rst],
                             message, syn_transmissions=syns))
    return out


RULE = Rule(
    code="TA106",
    name="connection-refused",
    title="Connection refused: SYN answered by RST",
    severity=Severity.WARNING,
    rationale=("A SYN answered by an acceptable RST (and no SYN-ACK) means the server host "
               "had no listener on that port, a firewall rejected the connection, or the "
               "accept queue overflowed with net.ipv4.tcp_abort_on_overflow = 1. The client "
               "gets ECONNREFUSED at once."),
    remediation=("Check that the service is running and listening on that address and port "
                 "(`ss -tlnp`), that clients use the right port, and firewall REJECT rules; "
                 "during deploys, keep the listener open until traffic is drained."),
    check=check,
    references=("RFC 9293 §3.10.7.1 (segment arrives, CLOSED)", "RFC 9293 §3.5.2 (reset "
                "generation)"),
)
