"""fin-wait-2-hang: the endpoint's FIN was acknowledged, the peer's FIN never came."""

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
    fin_timeout = int(analysis.tracked.config.fin_timeout_s * 1e9)
    out = []
    for e in (0, 1):
        p = 1 - e
        start = v.ep(e, K.E_FW2_TS)
        peer_fin = np.where((v.ep(p, K.E_FIN) == 1) & (v.ep(p, K.E_FIN_TS) >= start),
                            v.ep(p, K.E_FIN_TS), NEVER)
        expired = (v.ep(e, K.E_FLAGS) & K.F_FW2_EXPIRED) != 0
        wait = half_closed_wait(v, start, peer_fin, p, min_ns,
                                cap=np.where(expired, start + fin_timeout, NEVER))
        for c in np.flatnonzero((v.ep(e, K.E_FW2_FRAME) >= 0) & wait.hit).tolist():
            out.append(_finding(v, c, e, int(start[c]), int(wait.stop[c]),
                                int(wait.idle_from[c]), v.end_ns, bool(expired[c]), min_ns))
    return out


def _finding(v, c, e, start, stop, idle_from, end, expired, min_ns):
    p = 1 - e
    trk = v.row(c)
    eo, po = e * K.NE, p * K.NE
    fin_frame, ack_frame = int(trk[eo + K.E_FIN_FRAME]), int(trk[eo + K.E_FIN_ACKED_FRAME])
    frames = [fin_frame, ack_frame]
    still = stop >= end and trk[po + K.E_FIN] == 0 and trk[eo + K.E_RST] == 0 \
        and trk[po + K.E_RST] == 0
    confidence = "high"
    if still:
        how = "and still was at capture end"
        if stop - start < min_ns:
            how += " (the capture ends there, so how long it lasted is unknown)"
            confidence = "low"
    elif expired:
        how = ("until the orphaned socket timed out (tcp_fin_timeout): its later RST "
               f"(frame {trk[eo + K.E_RST_FRAME]}) shows it was gone")
        frames.append(int(trk[eo + K.E_RST_FRAME]))
    elif trk[po + K.E_FIN] == 1 and trk[po + K.E_FIN_TS] <= stop:
        how = f"until the {ENDPOINTS[p]}'s FIN finally came (frame {trk[po + K.E_FIN_FRAME]})"
        frames.append(int(trk[po + K.E_FIN_FRAME]))
    else:
        rst_ep = e if trk[eo + K.E_RST] > 0 and trk[eo + K.E_RST_TS] <= stop else p
        how = f"until {ENDPOINTS[rst_ep]} sent RST (frame {trk[rst_ep * K.NE + K.E_RST_FRAME]})"
        frames.append(int(trk[rst_ep * K.NE + K.E_RST_FRAME]))
    message = (f"{ENDPOINTS[e]} {v.address(c, e)} closed first (FIN frame {fin_frame}, "
               f"acknowledged at frame {ack_frame}) and waited {seconds(stop - start)} in "
               f"FIN_WAIT_2 for the {ENDPOINTS[p]}'s FIN, {how}.")
    if idle_from > start:
        message += f" The {ENDPOINTS[p]} sent data until {seconds(idle_from - start)} in."
    return v.finding(RULE, c, e, start, frames, message,
                     duration_s=round((stop - start) / 1e9, 6),
                     idle_s=round((stop - idle_from) / 1e9, 6),
                     still_open_at_capture_end=bool(still), confidence=confidence,
                     orphan_timed_out=expired)


RULE = Rule(
    code="TA102",
    name="fin-wait-2-hang",
    title="FIN_WAIT_2 hang: this endpoint closed, the peer never sent its FIN",
    severity=Severity.WARNING,
    rationale=("After its FIN is acknowledged an endpoint waits in FIN_WAIT_2 for the peer's "
               "FIN. A long wait means the peer's application has not closed its side (see "
               "half-closed-leak on the peer). Linux frees an orphaned FIN_WAIT_2 socket after "
               "net.ipv4.tcp_fin_timeout (60 s); one kept by shutdown(SHUT_WR) waits forever, "
               "and the peer's late data then meets an RST."),
    remediation=("Fix the peer that never closes (its CLOSE_WAIT is the bug). On this side, "
                 "close() rather than only shutdown() when done, and bound the wait with "
                 "application timeouts; tcp_fin_timeout only limits orphaned sockets."),
    check=check,
    thresholds={"min_duration": 2.0},
    threshold_help={"min_duration": "seconds in FIN_WAIT_2, with no data from the peer, before "
                                    "this is a hang; one still waiting at capture end with no "
                                    "data from the peer since is reported whatever the "
                                    "duration"},
    references=("RFC 9293 §3.10.7.4 (FIN-WAIT-2)", "Linux ip-sysctl: tcp_fin_timeout"),
)
