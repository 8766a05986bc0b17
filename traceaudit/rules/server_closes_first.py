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


def _hits(v: View) -> np.ndarray:
    guessed = np.asarray(v.analysis.table["orientation_guessed"], bool)
    return np.flatnonzero((v.conn("closer") == Closer.SERVER) & (v.ep(1, "fin_sent") == 1) &
                          (v.ep(1, "fin_frame") == v.conn("close_frame")) & ~guessed)


def services_closing_first(v: View, params=None) -> dict:
    """The ``TOTALS`` summary: connections per service (address:port) in all, and per
    service that closed first: [first such connection's id, how many, the FIN frames and
    ids of the first EXAMPLES]."""
    services = v.service_codes(1)
    order = np.argsort(services, kind="stable")
    _, start, counts = np.unique(services[order], return_index=True, return_counts=True)
    names = v.addresses(order[start].tolist(), 1)
    total = dict(zip(names, counts.tolist()))
    closing: dict[str, list] = {}
    hit = _hits(v)
    fin_frames, ids = v.ep(1, "fin_frame"), v.ids
    for c, service in zip(hit.tolist(), v.addresses(hit.tolist(), 1)):
        entry = closing.get(service)
        if entry is None:
            entry = closing[service] = [int(ids[c]), 0, [], []]
        entry[1] += 1
        if len(entry[2]) < EXAMPLES:
            entry[2].append(int(fin_frames[c]))
            entry[3].append(int(ids[c]))
    return {"total": total, "closing": closing}


def _merge(a: dict, b: dict) -> dict:
    """Two summaries as one; in either order (a flat read's chunks come in id order, the
    shares of a split by flow hash interleave): the first connection and the examples are
    the lowest ids of both."""
    for service, n in b["total"].items():
        a["total"][service] = a["total"].get(service, 0) + n
    for service, (first, n, frames, examples) in b["closing"].items():
        entry = a["closing"].get(service)
        if entry is None:
            a["closing"][service] = [first, n, frames, examples]
        else:
            entry[0] = min(entry[0], first)
            entry[1] += n
            pairs = sorted(zip(entry[3] + examples, entry[2] + frames))[:EXAMPLES]
            entry[2] = [frame for _, frame in pairs]
            entry[3] = [c for c, _ in pairs]
    return a


#: whole-capture summaries a flat read (``retire/flat.py``) sums over its chunks
TOTALS = {"services_closing_first": (services_closing_first, _merge)}


def check(analysis, params):
    v = View.of(analysis)
    if not v.n:
        return []
    hit = _hits(v)
    if not len(hit):
        return []
    whole = v.whole("services_closing_first", services_closing_first)
    fin_ts, tw_frames, ids = v.ep(1, "fin_ns"), v.ep(1, "tw_frame"), v.ids
    out = []
    for first, service in zip(hit.tolist(), v.addresses(hit.tolist(), 1)):
        first_id, n, frames, examples = whole["closing"][service]
        if first_id != ids[first]:
            continue                    # not this service's first (or in another chunk)
        total = whole["total"][service]
        tw = int(tw_frames[first])
        held = f", TIME_WAIT from frame {tw}" if tw >= 0 else ""
        ip, port = v.ip(first, 1), v.columns["server_port"][first]
        field = "ipv6" if ":" in ip else "ip"
        message = (f"server {service} closed first on {n:,} of its {total:,} connection(s) in "
                   f"this capture (first: tcp.stream {first_id}, FIN frame {frames[0]}{held}): "
                   f"the server, not its clients, holds their TIME_WAIT sockets for 2×MSL.")
        finding = v.finding(RULE, first, 1, int(fin_ts[first]), frames, message,
                            {"connections": n, "service_connections": total,
                             "example_connections": examples},
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
