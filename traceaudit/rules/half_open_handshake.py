"""half-open-handshake: SYN_RECEIVED never completed (many to one service: a SYN flood)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from traceaudit.rules.common import NEVER, View, seconds
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking import kernel as K


def check(analysis, params):
    v = View.of(analysis)
    if not v.n:
        return []
    table = analysis.table
    first_frames = table["client_first_frame"], table["server_first_frame"]
    synack_ts = (table["server_first_ts"] * 1e9).round()
    synack_ts = np.where(np.isnan(synack_ts), 0, synack_ts).astype(np.int64)
    rst = np.minimum(np.where(v.ep(0, K.E_RST) > 0, v.ep(0, K.E_RST_TS), NEVER),
                     np.where(v.ep(1, K.E_RST) > 0, v.ep(1, K.E_RST_TS), NEVER))
    stop = np.minimum(rst, v.end_ns)
    half_open = (v.handshake_seen & (v.ep(0, K.E_ISN_SET) == 1) & (v.ep(1, K.E_SYN_COUNT) > 0) &
                 (v.conn(K.K_SYNACK) == 1) & (v.ep(0, K.E_ACK_SET) == 0) &
                 (v.ep(0, K.E_FIN) == 0) & (v.ep(0, K.E_DATA_PKTS) == 0))
    hit = np.flatnonzero(half_open & (stop - synack_ts >= int(params["min_duration"] * 1e9)))
    per_service = Counter(v.address(c, 1) for c in hit.tolist())
    flood = int(params["flood_count"])
    out = []
    for c in hit.tolist():
        t = v.row(c)
        service = v.address(c, 1)
        synacks = int(t[K.NE + K.E_SYN_COUNT])
        frames = [int(first_frames[0][c]), int(first_frames[1][c]),
                  int(t[K.NE + K.E_SYN_LAST_FRAME])]
        ended = ("until the capture ended" if rst[c] > v.end_ns else
                 f"until an RST (frame {min(f for f in (t[K.E_RST_FRAME], t[K.NE + K.E_RST_FRAME]) if f >= 0)})")
        many = per_service[service]
        message = (f"server {service} answered the SYN of {v.address(c, 0)} with SYN-ACK "
                   f"(frame {frames[1]}, sent {synacks} time(s)) but the handshake's final ACK "
                   f"never came: SYN_RECEIVED for {seconds(stop[c] - synack_ts[c])}, {ended}.")
        if many >= flood:
            message += (f" {many} half-open handshakes to this service in the capture look like "
                        f"a SYN flood (or SYN-ACKs dropped on the way back to clients).")
        elif many > 1:
            message += f" {many} half-open handshakes to this service in the capture."
        out.append(v.finding(RULE, c, 1, int(synack_ts[c]), frames, message,
                             synack_transmissions=synacks, half_open_to_service=many,
                             syn_flood_suspected=many >= flood))
    return out


RULE = Rule(
    code="TA107",
    name="half-open-handshake",
    title="Half-open handshake: SYN-ACK never acknowledged",
    severity=Severity.WARNING,
    rationale=("A server that sent SYN-ACK waits in SYN_RECEIVED (a request socket in its SYN "
               "queue) for the client's ACK, retransmitting the SYN-ACK (net.ipv4."
               "tcp_synack_retries, about 63 s in all). If the ACK never comes the client "
               "vanished, a firewall drops the return path, or the SYNs were spoofed: many of "
               "them to one service fill its SYN queue (a SYN flood)."),
    remediation=("Many to one service: check for a SYN flood (enable net.ipv4.tcp_syncookies, "
                 "rate-limit SYNs) or an asymmetric route / stateful firewall dropping SYN-ACKs. "
                 "Single ones: the client gave up or lost connectivity."),
    check=check,
    thresholds={"min_duration": 1.0, "flood_count": 100},
    threshold_help={"min_duration": "seconds the SYN-ACK must go unanswered (a handshake still "
                                    "in progress at capture end is not half-open)",
                    "flood_count": "half-open handshakes to one service at which the finding "
                                   "says 'SYN flood'"},
    references=("RFC 9293 §3.5 (handshake)", "RFC 4987 (SYN flooding attacks)",
                "Linux ip-sysctl: tcp_synack_retries, tcp_syncookies"),
)
