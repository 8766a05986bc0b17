"""fin-wait-2-hang: the endpoint's FIN was acknowledged, the peer's FIN never came."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import (ENDPOINTS, NEVER, View, half_closed_wait, seconds,
                                     still_waiting)
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking.states import Hindsight


def check(analysis, params):
    v = View.of(analysis)
    if not v.n:
        return []
    min_ns = int(params["min_duration"] * 1e9)
    fin_timeout = int(analysis.tracked.config.fin_timeout_s * 1e9)
    out = []
    for e in (0, 1):
        p = 1 - e
        start = v.ep(e, "fw2_since_ns")
        peer_fin = np.where((v.ep(p, "fin_sent") == 1) & (v.ep(p, "fin_ns") >= start),
                            v.ep(p, "fin_ns"), NEVER)
        expired = (v.ep(e, "hindsight") & Hindsight.FW2_EXPIRED) != 0
        wait = half_closed_wait(v, start, peer_fin, p, min_ns,
                                cap=np.where(expired, start + fin_timeout, NEVER))
        hits = np.flatnonzero((v.ep(e, "fw2_frame") >= 0) & wait.hit)
        out += _findings(v, hits, e, start[hits].tolist(), wait.stop[hits].tolist(),
                         wait.idle_from[hits].tolist(), expired[hits].tolist(), min_ns)
    return out


def _findings(v: View, hits: np.ndarray, e: int, starts: list[int], stops: list[int],
              idles: list[int], expired: list[bool], min_ns: int):
    p = 1 - e
    me, peer, end = ENDPOINTS[e], ENDPOINTS[p], v.end_ns
    fin_frame, acked, rst, rst_ts, rst_frame = v.take(
        hits, e, "fin_frame", "fin_acked_frame", "rst_count", "rst_ns", "rst_frame")
    peer_fin, peer_fin_ts, peer_fin_frame, peer_rst, peer_rst_frame = v.take(
        hits, p, "fin_sent", "fin_ns", "fin_frame", "rst_count", "rst_frame")
    conns = hits.tolist()
    addrs = v.addresses(hits, e)
    frames, messages, details = [], [], []
    for i, (c, start, stop, idle_from) in enumerate(zip(conns, starts, stops, idles)):
        fr = [fin_frame[i], acked[i]]
        still = stop >= end and peer_fin[i] == 0 and rst[i] == 0 and peer_rst[i] == 0
        confidence = "high"
        if still:
            how, confidence = still_waiting(stop - start, min_ns)
        elif expired[i]:
            how = ("until the orphaned socket timed out (tcp_fin_timeout): its later RST "
                   f"(frame {rst_frame[i]}) shows it was gone")
            fr.append(rst_frame[i])
        elif peer_fin[i] == 1 and peer_fin_ts[i] <= stop:
            how = f"until the {peer}'s FIN finally came (frame {peer_fin_frame[i]})"
            fr.append(peer_fin_frame[i])
        else:
            own = rst[i] > 0 and rst_ts[i] <= stop
            frame = rst_frame[i] if own else peer_rst_frame[i]
            how = f"until {me if own else peer} sent RST (frame {frame})"
            fr.append(frame)
        message = (f"{me} {addrs[i]} closed first (FIN frame {fin_frame[i]}, "
                   f"acknowledged at frame {acked[i]}) and waited {seconds(stop - start)} in "
                   f"FIN_WAIT_2 for the {peer}'s FIN, {how}.")
        if idle_from > start:
            message += f" The {peer} sent data until {seconds(idle_from - start)} in."
        frames.append(fr)
        messages.append(message)
        details.append({"duration_s": round((stop - start) / 1e9, 6),
                        "idle_s": round((stop - idle_from) / 1e9, 6),
                        "still_open_at_capture_end": still, "confidence": confidence,
                        "orphan_timed_out": expired[i]})
    return v.findings(RULE, conns, e, starts, frames, messages, details)


#: nothing of other connections: a flat read runs it a chunk at a time (``retire/flat.py``)
TOTALS: dict = {}


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
