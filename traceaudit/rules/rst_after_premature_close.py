"""rst-after-premature-close: an endpoint that had closed answers with RST where a stateful TCP
would have sent an ACK."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View, seconds
from traceaudit.rules.model import Rule, Severity
from traceaudit.rules.resets import PREMATURE_CAUSES, reset_story
from traceaudit.tracking import kernel as K


def check(analysis, params):
    v = View.of(analysis)
    out = []
    for e in (0, 1) if v.n else ():
        story = reset_story(v, e)
        for c in np.flatnonzero(story.premature >= 0).tolist():
            out.append(_finding(v, c, e, PREMATURE_CAUSES[story.premature[c]]))
    return out


def _finding(v: View, c: int, e: int, cause: str):
    p = 1 - e
    t = v.row(c)
    eo, po = e * K.NE, p * K.NE
    rst, answer = int(t[eo + K.E_RST_FRAME]), int(t[eo + K.E_RST_ANSWER])
    rst_ts = int(t[eo + K.E_RST_TS])
    me, peer = f"{ENDPOINTS[e]} {v.address(c, e)}", ENDPOINTS[p]
    fin = int(t[eo + K.E_FIN_FRAME])
    if cause == "time_wait_skipped":
        tw = int(t[eo + K.E_TW_FRAME])
        frames = [fin, tw, answer, rst]
        again = "retransmitted " if t[eo + K.E_RST_ANSWER_KIND] & K.ANS_FIN_AGAIN else ""
        message = (f"{me} closed first (FIN frame {fin}) and answered the {peer}'s {again}"
                   f"FIN (frame {answer}) with a bare RST (frame {rst}) instead of an ACK: it "
                   f"no longer held TIME_WAIT"
                   + (f" (it entered TIME_WAIT at frame {tw}, "
                      f"{seconds(rst_ts - t[eo + K.E_TW_TS])} before)" if 0 <= tw != answer else
                      " (its orphaned FIN_WAIT_2 socket was already gone when this FIN came: "
                      "it needed a TIME_WAIT bucket it did not get)")
                   + f". The {peer}'s close ends in an error instead of a clean LAST_ACK.")
    elif cause == "fin_wait_2_expired":
        fw2 = int(t[eo + K.E_FW2_FRAME])
        timeout = v.analysis.tracked.config.fin_timeout_s
        frames = [fin, fw2, answer, rst]
        message = (f"{me} closed first (FIN frame {fin}); {seconds(rst_ts - t[eo + K.E_FW2_TS])} "
                   f"after entering FIN_WAIT_2 (frame {fw2}) it answered the {peer}'s late "
                   f"segment (frame {answer}) with a bare RST (frame {rst}): the orphaned socket "
                   f"had been freed after tcp_fin_timeout ({timeout:g} s here), while the {peer} "
                   f"still held the connection half-open; its late data was lost.")
    else:
        data = int(t[po + K.E_LAST_DATA_FRAME])
        frames = [fin, data, rst]
        message = (f"{me} had closed (FIN frame {fin}) and answered the {peer}'s later data "
                   f"(frame {data}) with RST (frame {rst}): "
                   f"the {peer} kept sending after this side's close(), and its data was "
                   f"discarded.")
    return v.finding(RULE, c, e, rst_ts, frames, message, cause=cause)


RULE = Rule(
    code="TA103",
    name="rst-after-premature-close",
    title="RST from an endpoint that had already closed",
    severity=Severity.WARNING,
    rationale=("An endpoint that closed first should answer late segments of the connection "
               "with ACKs until TIME_WAIT ends. An RST instead means its state was gone too "
               "early: TIME_WAIT cut short (tcp_max_tw_buckets overflow, SO_LINGER games: "
               "cause time_wait_skipped), an orphaned FIN_WAIT_2 freed by tcp_fin_timeout while "
               "the peer still had data to send (fin_wait_2_expired), or a peer that kept "
               "sending after this side's close() (data_after_close). The peer's last data or "
               "its close ends in ECONNRESET."),
    remediation=("time_wait_skipped: raise net.ipv4.tcp_max_tw_buckets or stop aborting "
                 "connections in TIME_WAIT; reuse ports with tcp_tw_reuse instead. "
                 "fin_wait_2_expired: fix the peer that keeps the connection half-open (its "
                 "CLOSE_WAIT), or let the application protocol say when it is done. "
                 "data_after_close: make both sides agree on who closes and when (e.g. HTTP "
                 "keep-alive timeouts: the client's must be shorter than the server's)."),
    check=check,
    references=("RFC 9293 §3.6.1 (TIME-WAIT)", "RFC 1337 (TIME-WAIT hazards)",
                "Linux ip-sysctl: tcp_max_tw_buckets, tcp_fin_timeout"),
)
