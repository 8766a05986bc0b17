"""time-wait-reuse: a new SYN on a 4-tuple whose last incarnation is still in TIME_WAIT."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View, seconds
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking.states import Reason
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_REASON


def recycled(v: View, params=None) -> dict:
    """The ``TOTALS`` summary: connections whose TIME_WAIT a new SYN recycled, by id: the
    SYN's frame, and per endpoint that held it (in timeline order) its address, TIME_WAIT
    frame and start."""
    ev = v.analysis.events
    rows = ev[ev[:, EV_REASON] == Reason.TIME_WAIT_RECYCLED]
    out: dict[int, tuple[int, list]] = {}
    for conn, e in zip(rows[:, EV_CONN].tolist(), rows[:, EV_ENDPOINT].tolist()):
        c = int(v.ids[conn])
        if c not in out:
            out[c] = (v.row(conn)["tw_recycled_frame"], [])
        held = v.row(conn, e)
        out[c][1].append((v.address(conn, e), held["tw_frame"], held["tw_since_ns"]))
    return out


def _merge(a: dict, b: dict) -> dict:
    a.update(b)
    return a


#: whole-capture summaries a flat read (``retire/flat.py``) sums over its chunks
TOTALS = {"time_wait_recycled": (recycled, _merge)}


def check(analysis, params):
    v = View.of(analysis)
    if not v.n:
        return []
    hit = np.flatnonzero(v.conn("prev_in_time_wait") == 1)
    if not len(hit):
        return []
    holders = v.whole("time_wait_recycled", recycled)
    out = []
    for c in hit.tolist():
        prev = int(v.conn("prev")[c])           # (an id: a flat read's chunk holds its own)
        syn, held_by = holders.get(prev, (None, []))
        for holder, tw_frame, tw_ts in held_by:
            e = 0 if holder == v.address(c, 0) else 1
            ts = int(round(float(analysis.table["start_ts"][c]) * 1e9))   # its SYN
            message = (f"a new SYN (frame {syn}) reused the 4-tuple of tcp.stream {prev} while "
                       f"{ENDPOINTS[e]} {holder} still held it in TIME_WAIT (entered at frame "
                       f"{tw_frame}, {seconds(ts - tw_ts)} before): the stack had to accept a "
                       f"SYN in TIME_WAIT (RFC 6191, timestamps) or tcp_tw_reuse let the port "
                       f"be reused; old duplicates of the previous connection could corrupt the "
                       f"new one without timestamps.")
            found = v.finding(RULE, c, e, ts, [tw_frame, syn], message,
                              {"previous_connection": prev,
                               "time_wait_age_s": round((ts - tw_ts) / 1e9, 6)})
            # the evidence spans both incarnations: the old one's TIME_WAIT, the new SYN
            found.display_filter = f"tcp.stream in {{{prev}, {found.connection}}}"
            out.append(found)
    return out


RULE = Rule(
    code="TA110",
    name="time-wait-reuse",
    title="TIME_WAIT reuse: a new connection on a 4-tuple still in TIME_WAIT",
    severity=Severity.WARNING,
    rationale=("TIME_WAIT protects a new incarnation of a 4-tuple from old duplicate segments "
               "for 2×MSL. A new SYN on the same addresses and ports before that ends is "
               "accepted only with timestamps / higher sequence numbers (RFC 6191) or through "
               "net.ipv4.tcp_tw_reuse; it is a sign of port exhaustion (a client cycling "
               "through a small port range to one server) or of fixed source ports."),
    remediation=("Give clients a wider ephemeral port range (net.ipv4.ip_local_port_range), "
                 "more destination addresses/ports, or connection reuse (keep-alive pools); "
                 "keep TCP timestamps on; do not bind clients to fixed ports."),
    check=check,
    references=("RFC 9293 §3.6.1", "RFC 6191", "Linux ip-sysctl: tcp_tw_reuse, "
                "ip_local_port_range"),
)
