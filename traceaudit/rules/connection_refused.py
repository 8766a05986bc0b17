"""connection-refused: the SYN was answered by RST, no SYN-ACK."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import View
from traceaudit.rules.model import Rule, Severity


def check(analysis, params):
    v = View.of(analysis)
    if not v.n:
        return []
    hits = np.flatnonzero(v.conn("refused") == 1)
    (first,) = v.take(hits, 0, "first_frame")
    ports = v.columns["server_port"][hits].tolist()
    rst, rst_ts = v.take(hits, 1, "rst_frame", "rst_ns")
    (syns,) = v.take(hits, 0, "syn_count")
    conns = hits.tolist()
    servers, clients = v.addresses(hits, 1), v.addresses(hits, 0)
    messages = []
    for i, c in enumerate(conns):
        tries = f" after {syns[i]} SYN transmissions" if syns[i] > 1 else ""
        messages.append(
            f"server {servers[i]} refused the connection from client {clients[i]}: "
            f"the SYN (frame {first[i]}) was answered by RST (frame {rst[i]}){tries}. Nothing "
            f"was listening on port {ports[i]} (or a firewall rejects with tcp-reset, or the "
            f"listen backlog overflowed with tcp_abort_on_overflow).")
    return v.findings(RULE, conns, 1, rst_ts, [list(f) for f in zip(first, rst)], messages,
                      [{"syn_transmissions": n} for n in syns])


#: nothing of other connections: a flat read runs it a chunk at a time (``retire/flat.py``)
TOTALS: dict = {}


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
