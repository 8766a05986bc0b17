"""half-open-handshake: SYN_RECEIVED never completed (many to one service: a SYN flood)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from traceaudit.rules.common import NEVER, View, seconds
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking.states import EndpointState, Hindsight


def _half_open(v: View, params) -> tuple[np.ndarray, ...]:
    """(hits, synack_ts, rst, gave_up, stop, ack_lost): the handshakes left half-open for
    at least min_duration, and the times their verdicts read."""
    # (the facts of the current incarnation: a replayed 4-tuple's first packets are older)
    synack_ts = v.ep(1, "first_ns")
    rst = np.minimum(np.where(v.ep(0, "rst_count") > 0, v.ep(0, "rst_ns"), NEVER),
                     np.where(v.ep(1, "rst_count") > 0, v.ep(1, "rst_ns"), NEVER))
    gave_up = v.ep(1, "gave_up_ns")
    stop = np.minimum(np.minimum(rst, v.end_ns), np.where(gave_up > 0, gave_up, NEVER))
    unanswered = ((v.ep(0, "ack_set") == 0) & (v.ep(0, "fin_sent") == 0) &
                  (v.ep(0, "data_pkts") == 0))
    # the client answered, but the server sent its SYN-ACK again after that ACK (so it never
    # arrived) and never got to ESTABLISHED: it gave up, or was still waiting, or reset
    ack_lost = (((v.ep(1, "hindsight") & Hindsight.SYN_ACK_AGAIN) != 0) &
                ((gave_up > 0) | (v.ep(1, "state") == EndpointState.SYN_RECEIVED) |
                 ((v.ep(1, "rst_count") > 0) &
                  (v.ep(1, "rst_from_state") == EndpointState.SYN_RECEIVED))))
    half_open = (v.handshake_seen & (v.ep(0, "isn_seen") == 1) & (v.ep(1, "syn_count") > 0) &
                 (v.conn("synack_seen") == 1) & (unanswered | ack_lost))
    hits = np.flatnonzero(half_open & (stop - synack_ts >= int(params["min_duration"] * 1e9)))
    return hits, synack_ts, rst, gave_up, stop, ack_lost


def half_open_per_service(v: View, params) -> Counter:
    """The ``TOTALS`` summary: half-open handshakes per service (address:port)."""
    return Counter(v.addresses(_half_open(v, params)[0].tolist(), 1))


#: whole-capture summaries a flat read (``retire/flat.py``) sums over its chunks
TOTALS = {"half_open_per_service": (half_open_per_service, lambda a, b: a + b)}


def check(analysis, params):
    v = View.of(analysis)
    if not v.n:
        return []
    hits, synack_ts, rst, gave_up, stop, ack_lost = _half_open(v, params)
    conns = hits.tolist()
    services = v.addresses(conns, 1)
    clients = v.addresses(conns, 0)
    per_service = v.whole("half_open_per_service", lambda v: Counter(services))
    flood = int(params["flood_count"])
    synacks, synack_frame, srv_rst_frame = v.take(hits, 1, "syn_count", "syn_last_frame",
                                                  "rst_frame")
    (cli_rst_frame,) = v.take(hits, 0, "rst_frame")
    (first_client,) = v.take(hits, 0, "first_frame")
    (first_server,) = v.take(hits, 1, "first_frame")
    opened = synack_ts[hits].tolist()
    waited = (stop[hits] - synack_ts[hits]).tolist()
    reset = (rst[hits] <= v.end_ns).tolist()
    lost = ack_lost[hits].tolist()
    dropped = (gave_up[hits] > 0).tolist()
    frames, messages, details = [], [], []
    for i, c in enumerate(conns):
        service = services[i]
        fr = [first_client[i], first_server[i], synack_frame[i]]
        first_rst = min((f for f in (cli_rst_frame[i], srv_rst_frame[i]) if f >= 0),
                        default=-1)
        if dropped[i]:
            ended = ("until it gave up: no SYN-ACK came when its next retransmission was due, "
                     "so the half-open connection was dropped without a packet "
                     "(tcp_synack_retries ran out)")
            if srv_rst_frame[i] >= 0:
                ended += (f"; its RST (frame {srv_rst_frame[i]}) to the client's later "
                          f"segment confirms it had no connection left")
                fr.append(srv_rst_frame[i])
        elif reset[i]:
            ended = f"until an RST (frame {first_rst})"
        else:
            ended = "until the capture ended"
        if lost[i]:
            never = ("never reached it: the client's ACK is in the capture, but the server "
                     "sent its SYN-ACK again after it, so the ACK was lost between the capture "
                     "point and the server")
        else:
            never = "never came"
        many = per_service[service]
        message = (f"server {service} answered the SYN of {clients[i]} with SYN-ACK "
                   f"(frame {fr[1]}, sent {synacks[i]} time(s)) but the handshake's final ACK "
                   f"{never}: SYN_RECEIVED for {seconds(waited[i])}, {ended}.")
        if many >= flood:
            message += (f" {many} half-open handshakes to this service in the capture look like "
                        f"a SYN flood (or SYN-ACKs dropped on the way back to clients).")
        elif many > 1:
            message += f" {many} half-open handshakes to this service in the capture."
        frames.append(fr)
        messages.append(message)
        details.append({"synack_transmissions": synacks[i], "half_open_to_service": many,
                        "syn_flood_suspected": many >= flood, "ack_lost": lost[i],
                        "server_gave_up": dropped[i]})
    return v.findings(RULE, conns, 1, opened, frames, messages, details)


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
