"""half-closed-leak: CLOSE_WAIT held by an application that never called close()."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, NEVER, View, half_closed_wait, seconds
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking import kernel as K


def check(analysis, params):
    v = View.of(analysis)
    if not v.n:
        return []
    min_ns = int(params["min_duration"] * 1e9)
    crossed = (v.ep(0, K.E_FLAGS) | v.ep(1, K.E_FLAGS)) & K.F_FINS_CROSSED
    out = []
    for e in (0, 1):
        p = 1 - e
        in_cw = ((v.ep(e, K.E_CW_FRAME) >= 0) & (v.ep(p, K.E_FIN_ACKED_FRAME) >= 0) &
                 (crossed == 0))
        start = v.ep(e, K.E_CW_TS)
        own_fin = np.where(v.ep(e, K.E_FIN) == 1, v.ep(e, K.E_FIN_TS), NEVER)
        wait = half_closed_wait(v, start, own_fin, e, min_ns)
        for c in np.flatnonzero(in_cw & wait.hit).tolist():
            out.append(_finding(v, c, e, int(start[c]), int(wait.stop[c]),
                                int(wait.idle_from[c]), v.end_ns, min_ns))
    return out


def _finding(v: View, c: int, e: int, start: int, stop: int, idle_from: int, end: int,
             min_ns: int):
    p = 1 - e
    trk = v.row(c)
    eo, po = e * K.NE, p * K.NE
    fin_frame, ack_frame = int(trk[eo + K.E_GOT_FIN_FRAME]), int(trk[po + K.E_FIN_ACKED_FRAME])
    still = stop >= end and trk[eo + K.E_FIN] == 0 and trk[eo + K.E_RST] == 0 \
        and trk[po + K.E_RST] == 0
    frames = [fin_frame, ack_frame]
    confidence = "high"
    if still:
        how = "and still was at capture end"
        if stop - start < min_ns:
            how += " (the capture ends there, so how long it lasted is unknown)"
            confidence = "low"
    elif trk[eo + K.E_FIN] == 1 and trk[eo + K.E_FIN_TS] <= stop:
        how = f"until it finally sent its FIN (frame {trk[eo + K.E_FIN_FRAME]})"
        frames.append(int(trk[eo + K.E_FIN_FRAME]))
    elif trk[eo + K.E_RST] > 0 and trk[eo + K.E_RST_TS] <= stop:
        how = f"until it sent RST (frame {trk[eo + K.E_RST_FRAME]})"
        frames.append(int(trk[eo + K.E_RST_FRAME]))
    else:
        how = f"until the {ENDPOINTS[p]} reset the connection (frame {trk[po + K.E_RST_FRAME]})"
        frames.append(int(trk[po + K.E_RST_FRAME]))
    extra = []
    if idle_from > start:
        extra.append(f"it last sent data {seconds(idle_from - start)} into CLOSE_WAIT"
                     + (f", then nothing for {seconds(stop - idle_from)}"
                        if stop - idle_from >= 1_000_000 else ""))
    probes = int(trk[eo + K.E_KEEPALIVE_HALF])
    if probes:
        extra.append(f"its {probes} keepalive probe(s) kept the connection alive")
    message = (f"{ENDPOINTS[e]} {v.address(c, e)} received the {ENDPOINTS[p]}'s FIN "
               f"(frame {fin_frame}) and acknowledged it (frame {ack_frame}) but never sent its "
               f"own FIN: CLOSE_WAIT for {seconds(stop - start)}, {how}"
               + ("; " + "; ".join(extra) if extra else "") + ".")
    return v.finding(RULE, c, e, start, frames, message,
                     duration_s=round((stop - start) / 1e9, 6),
                     idle_s=round((stop - idle_from) / 1e9, 6),
                     still_open_at_capture_end=bool(still), confidence=confidence,
                     keepalive_probes=probes)


RULE = Rule(
    code="TA101",
    name="half-closed-leak",
    title="CLOSE_WAIT leak: the peer closed, this endpoint never did",
    severity=Severity.ERROR,
    rationale=("An endpoint in CLOSE_WAIT has received and acknowledged the peer's FIN; only its "
               "own application can leave the state, by calling close() (or shutdown()). When "
               "it never does, the socket, its file descriptor and buffers stay allocated "
               "until the process exits: under load the process runs out of descriptors, and "
               "the peer sits in FIN_WAIT_2. Keepalive probes do not end it."),
    remediation=("Close the socket when read() returns 0 (EOF) or the connection pool evicts "
                 "it: check every error path for a missing close() (try/finally, with, defer, "
                 "RAII). On the host, `ss -tan state close-wait` lists the leaked sockets and "
                 "`ss -tanp` names the process."),
    check=check,
    thresholds={"min_duration": 2.0},
    threshold_help={"min_duration": "seconds the endpoint must sit in CLOSE_WAIT, idle (no data "
                                    "sent), before this is a leak; one still in CLOSE_WAIT at "
                                    "capture end that sent nothing after the FIN is reported "
                                    "whatever the duration"},
    references=("RFC 9293 §3.6 (closing a connection)", "RFC 9293 §3.10.7.4 (CLOSE-WAIT)",
                "ss(8): state close-wait"),
)
