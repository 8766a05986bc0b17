"""half-closed-leak: CLOSE_WAIT held by an application that never called close()."""

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
    crossed = (v.ep(0, "hindsight") | v.ep(1, "hindsight")) & Hindsight.FINS_CROSSED
    out = []
    for e in (0, 1):
        p = 1 - e
        in_cw = ((v.ep(e, "cw_frame") >= 0) & (v.ep(p, "fin_acked_frame") >= 0) &
                 (crossed == 0))
        start = v.ep(e, "cw_since_ns")
        own_fin = np.where(v.ep(e, "fin_sent") == 1, v.ep(e, "fin_ns"), NEVER)
        wait = half_closed_wait(v, start, own_fin, e, min_ns)
        hits = np.flatnonzero(in_cw & wait.hit)
        out += _findings(v, hits, e, start[hits].tolist(), wait.stop[hits].tolist(),
                         wait.idle_from[hits].tolist(), min_ns)
    return out


def _findings(v: View, hits: np.ndarray, e: int, starts: list[int], stops: list[int],
              idles: list[int], min_ns: int):
    p = 1 - e
    me, peer, end = ENDPOINTS[e], ENDPOINTS[p], v.end_ns
    got_fin, fin, fin_ts, fin_frame, rst, rst_ts, rst_frame, probes = v.take(
        hits, e, "got_fin_frame", "fin_sent", "fin_ns", "fin_frame", "rst_count", "rst_ns",
        "rst_frame", "keepalives_half_closed")
    acked, peer_rst, peer_rst_frame = v.take(hits, p, "fin_acked_frame", "rst_count",
                                             "rst_frame")
    conns = hits.tolist()
    addrs = v.addresses(hits, e)
    frames, messages, details = [], [], []
    for i, (c, start, stop, idle_from) in enumerate(zip(conns, starts, stops, idles)):
        still = stop >= end and fin[i] == 0 and rst[i] == 0 and peer_rst[i] == 0
        fr = [got_fin[i], acked[i]]
        confidence = "high"
        if still:
            how, confidence = still_waiting(stop - start, min_ns)
        elif fin[i] == 1 and fin_ts[i] <= stop:
            how = f"until it finally sent its FIN (frame {fin_frame[i]})"
            fr.append(fin_frame[i])
        elif rst[i] > 0 and rst_ts[i] <= stop:
            how = f"until it sent RST (frame {rst_frame[i]})"
            fr.append(rst_frame[i])
        else:
            how = f"until the {peer} reset the connection (frame {peer_rst_frame[i]})"
            fr.append(peer_rst_frame[i])
        extra = []
        if idle_from > start:
            extra.append(f"it last sent data {seconds(idle_from - start)} into CLOSE_WAIT"
                         + (f", then nothing for {seconds(stop - idle_from)}"
                            if stop - idle_from >= 1_000_000 else ""))
        if probes[i]:
            extra.append(f"its {probes[i]} keepalive probe(s) kept the connection alive")
        frames.append(fr)
        messages.append(
            f"{me} {addrs[i]} received the {peer}'s FIN (frame {got_fin[i]}) and "
            f"acknowledged it (frame {acked[i]}) but never sent its own FIN: CLOSE_WAIT for "
            f"{seconds(stop - start)}, {how}" + ("; " + "; ".join(extra) if extra else "") + ".")
        details.append({"duration_s": round((stop - start) / 1e9, 6),
                        "idle_s": round((stop - idle_from) / 1e9, 6),
                        "still_open_at_capture_end": still, "confidence": confidence,
                        "keepalive_probes": probes[i]})
    return v.findings(RULE, conns, e, starts, frames, messages, details)


#: nothing of other connections: a flat read runs it a chunk at a time (``retire/flat.py``)
TOTALS: dict = {}


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
