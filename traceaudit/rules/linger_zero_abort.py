"""linger-zero-abort: RST instead of FIN with nothing left to answer (SO_LINGER {1, 0})."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View
from traceaudit.rules.model import Rule, Severity
from traceaudit.rules.resets import reset_story
from traceaudit.tracking import kernel as K


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
        hit = story.abort & ~is_unread(story, e)
        for c in np.flatnonzero(hit).tolist():
            out.append(_finding(v, c, e, bool(story.unanswered_data[c])))
    return out


def _finding(v: View, c: int, e: int, after_peer_data: bool):
    p = 1 - e
    t = v.row(c)
    eo, po = e * K.NE, p * K.NE
    rst = int(t[eo + K.E_RST_FRAME])
    state = "CLOSE_WAIT" if t[eo + K.E_RST_STATE] == K.CLOSE_WAIT else "ESTABLISHED"
    frames = [int(t[eo + K.E_LAST_DATA_FRAME]), int(t[po + K.E_LAST_DATA_FRAME]), rst]
    if after_peer_data:
        confidence = "medium"
        caveat = (f" The {ENDPOINTS[p]}'s last data (frame {t[po + K.E_LAST_DATA_FRAME]}) came "
                  f"after this side's: if the application had not read it, this is a close() "
                  f"with unread data instead (same packets on the wire).")
    else:
        confidence = "high"
        own = int(t[eo + K.E_LAST_DATA_FRAME])
        caveat = (f" Its own data was the last to flow (frame {own}): nothing was left "
                  f"unanswered." if own >= 0 else " No data had flowed from the peer.")
    message = (f"{ENDPOINTS[e]} {v.address(c, e)} ended the connection from {state} with RST "
               f"(frame {rst}) instead of FIN, with nothing in the capture for the RST to "
               f"answer: an abortive close, typically SO_LINGER {{on, 0}} then close(). The "
               f"{ENDPOINTS[p]} gets ECONNRESET and any data in flight is lost.{caveat}")
    return v.finding(RULE, c, e, int(t[eo + K.E_RST_TS]), frames, message,
                     confidence=confidence, state_before=state)


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
