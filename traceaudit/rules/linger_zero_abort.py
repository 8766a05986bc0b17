"""linger-zero-abort: RST instead of FIN with nothing left to answer (SO_LINGER {1, 0})."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View
from traceaudit.rules.model import Rule, Severity
from traceaudit.rules.resets import reset_story
from traceaudit.tracking.states import EndpointState


def is_unread(story, e: int) -> np.ndarray:
    """Aborts that look like close() with unread data (the rest look like SO_LINGER 0).

    The RST acknowledges data it had not acknowledged before (the data was still arriving), or
    the endpoint is the server and the client's last data (a request) was never answered.
    """
    return story.abort & (story.answers_data | (story.unanswered_data & (e == 1)))


def check(analysis, params):
    v = View.of(analysis)
    out = []
    for e in (0, 1) if v.n else ():
        story = reset_story(v, e)
        hits = np.flatnonzero(story.abort & ~is_unread(story, e))
        out += _findings(v, hits, e, story.unanswered_data[hits].tolist())
    return out


def _findings(v: View, hits: np.ndarray, e: int, after_peer_data: list[bool]):
    me, peer = ENDPOINTS[e], ENDPOINTS[1 - e]
    rst, rst_state, rst_ts, own = v.take(hits, e, "rst_frame", "rst_from_state", "rst_ns",
                                         "last_data_frame")
    (peer_data,) = v.take(hits, 1 - e, "last_data_frame")
    conns = hits.tolist()
    addrs = v.addresses(hits, e)
    frames, messages, details = [], [], []
    for i, c in enumerate(conns):
        state = "CLOSE_WAIT" if rst_state[i] == EndpointState.CLOSE_WAIT else "ESTABLISHED"
        if after_peer_data[i]:
            confidence = "medium"
            caveat = (f" The {peer}'s last data (frame {peer_data[i]}) came after this "
                      f"side's: if the application had not read it, this is a close() with "
                      f"unread data instead (same packets on the wire).")
        else:
            confidence = "high"
            caveat = (f" Its own data was the last to flow (frame {own[i]}): nothing was left "
                      f"unanswered." if own[i] >= 0 else " No data had flowed from the peer.")
        frames.append([own[i], peer_data[i], rst[i]])
        messages.append(
            f"{me} {addrs[i]} ended the connection from {state} with RST "
            f"(frame {rst[i]}) instead of FIN, with nothing in the capture for the RST to "
            f"answer: an abortive close, typically SO_LINGER {{on, 0}} then close(). The "
            f"{peer} gets ECONNRESET and any data in flight is lost.{caveat}")
        details.append({"confidence": confidence, "state_before": state})
    return v.findings(RULE, conns, e, rst_ts, frames, messages, details)


RULE = Rule(
    code="TA104",
    name="linger-zero-abort",
    title="Abortive close: RST instead of FIN (SO_LINGER 0)",
    severity=Severity.WARNING,
    rationale=("An endpoint in ESTABLISHED (or CLOSE_WAIT) that sends RST without a FIN of its "
               "own, unprompted, aborted the connection: SO_LINGER {on, 0} before close() (a "
               "common trick to avoid TIME_WAIT), or a proxy or load balancer configured to "
               "reset. The peer sees ECONNRESET, unacknowledged data is discarded, and nothing "
               "protects a later connection on the same ports from stray old segments."),
    remediation=("Close gracefully: drop SO_LINGER 0 (or the proxy's 'nolinger' option) and "
                 "let the side that closes first hold TIME_WAIT; if TIME_WAIT pressure is the "
                 "reason, let the client close first or enable net.ipv4.tcp_tw_reuse."),
    check=check,
    references=("RFC 9293 §3.6 and §3.10.5 (ABORT)", "socket(7): SO_LINGER",
                "RFC 2525 §2.17 (RST on close with unread data)"),
)
