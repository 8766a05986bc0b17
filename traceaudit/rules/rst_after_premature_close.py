"""rst-after-premature-close: an endpoint that had closed answers with RST where a stateful TCP
would have sent an ACK."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View, seconds
from traceaudit.rules.model import Rule, Severity
from traceaudit.rules.resets import TOTALS, PREMATURE_CAUSES, reset_story  # noqa: F401 (TOTALS: for a flat read)
from traceaudit.tracking.states import Answered


def check(analysis, params):
    v = View.of(analysis)
    out = []
    for e in (0, 1) if v.n else ():
        story = reset_story(v, e)
        hits = np.flatnonzero(story.premature >= 0)
        out += _findings(v, hits, e, story.premature[hits].tolist())
    return out


def _findings(v: View, hits: np.ndarray, e: int, causes: list[int]):
    peer = ENDPOINTS[1 - e]
    rst, answer, rst_ts, fin, tw, tw_ts, kind, fw2, fw2_ts = v.take(
        hits, e, "rst_frame", "rst_answers_frame", "rst_ns", "fin_frame", "tw_frame",
        "tw_since_ns", "rst_answers_kind", "fw2_frame", "fw2_since_ns")
    (data,) = v.take(hits, 1 - e, "last_data_frame")
    timeout = v.analysis.tracked.config.fin_timeout_s
    conns = hits.tolist()
    addrs = v.addresses(hits, e)
    frames, messages, details = [], [], []
    for i, c in enumerate(conns):
        cause = PREMATURE_CAUSES[causes[i]]
        me = f"{ENDPOINTS[e]} {addrs[i]}"
        if cause == "time_wait_skipped":
            frames.append([fin[i], tw[i], answer[i], rst[i]])
            again = "retransmitted " if kind[i] & Answered.FIN_AGAIN else ""
            messages.append(
                f"{me} closed first (FIN frame {fin[i]}) and answered the {peer}'s {again}"
                f"FIN (frame {answer[i]}) with a bare RST (frame {rst[i]}) instead of an ACK: "
                f"it no longer held TIME_WAIT"
                + (f" (it entered TIME_WAIT at frame {tw[i]}, "
                   f"{seconds(rst_ts[i] - tw_ts[i])} before)" if 0 <= tw[i] != answer[i] else
                   " (its orphaned FIN_WAIT_2 socket was already gone when this FIN came: "
                   "it needed a TIME_WAIT bucket it did not get)")
                + f". The {peer}'s close ends in an error instead of a clean LAST_ACK.")
        elif cause == "fin_wait_2_expired":
            frames.append([fin[i], fw2[i], answer[i], rst[i]])
            messages.append(
                f"{me} closed first (FIN frame {fin[i]}); {seconds(rst_ts[i] - fw2_ts[i])} "
                f"after entering FIN_WAIT_2 (frame {fw2[i]}) it answered the {peer}'s late "
                f"segment (frame {answer[i]}) with a bare RST (frame {rst[i]}): the orphaned "
                f"socket had been freed after tcp_fin_timeout ({timeout:g} s here), while the "
                f"{peer} still held the connection half-open; its late data was lost.")
        else:
            frames.append([fin[i], data[i], rst[i]])
            messages.append(
                f"{me} had closed (FIN frame {fin[i]}) and answered the {peer}'s later data "
                f"(frame {data[i]}) with RST (frame {rst[i]}): the {peer} kept sending after "
                f"this side's close(), and its data was discarded.")
        details.append({"cause": cause})
    return v.findings(RULE, conns, e, rst_ts, frames, messages, details)


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
