"""linger-zero-abort: RST instead of FIN with nothing left to answer (SO_LINGER {1, 0})."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View
from traceaudit.rules.model import Rule, Severity
from traceaudit.rules.resets import TOTALS, is_unread, reset_story  # noqa: F401 (TOTALS: for a flat read)
from traceaudit.tracking.states import EndpointState


def check(analysis, params):
    v = View.of(analysis)
    out = []
    for e in (0, 1) if v.n else ():
        story = reset_story(v, e)
        hits = np.flatnonzero(story.abort & ~is_unread(story, e))
        out += _findings(v, hits, e, story.unanswered_data[hits].tolist(),
                         story.resets_everywhere[hits].tolist(),
                         story.others_fin[hits].tolist(), story.others_abort[hits].tolist(),
                         story.requests_in[hits].tolist(), story.responses_out[hits].tolist())
    return out


def _findings(v: View, hits: np.ndarray, e: int, after_peer_data: list[bool],
              policy: list[bool], others_fin: list[int], others_abort: list[int],
              requests_in: list[int], responses_out: list[int]):
    me, peer = ENDPOINTS[e], ENDPOINTS[1 - e]
    rst, rst_state, rst_ts, own = v.take(hits, e, "rst_frame", "rst_from_state", "rst_ns",
                                         "last_data_frame")
    (peer_data,) = v.take(hits, 1 - e, "last_data_frame")
    conns = hits.tolist()
    addrs = v.addresses(hits, e)
    frames, messages, details = [], [], []
    siblings = "connections to this service" if e == 0 else "connections"
    whole = v.handshake_seen[hits].tolist()     # (else the peer's data may predate the capture)
    for i, c in enumerate(conns):
        state = "CLOSE_WAIT" if rst_state[i] == EndpointState.CLOSE_WAIT else "ESTABLISHED"
        if policy[i]:
            # the only evidence that tells an abort policy from unread data
            confidence = "high"
            caveat = (f" It ended its {others_abort[i]} other {siblings} in the capture with "
                      f"RST as well and closed none with FIN: an abort policy, not data left "
                      f"unread.")
        elif peer_data[i] < 0 and whole[i]:
            confidence = "high"
            caveat = f" The {peer} had sent no data: none could be left unread."
        elif after_peer_data[i]:
            confidence = "medium"
            caveat = (f" The {peer}'s last data (frame {peer_data[i]}) came after this "
                      f"side's: if the application had not read it, this is a close() with "
                      f"unread data instead (same packets on the wire).")
        else:
            confidence = "medium"
            if own[i] >= 0:
                caveat = (f" Its own data was the last to flow (frame {own[i]}), but that does "
                          f"not show that it had read everything it received (a request "
                          f"pipelined behind the one it answered): close() with unread data "
                          f"sends the same RST.")
            else:
                caveat = " No data had flowed from it."
            if others_fin[i] or others_abort[i]:
                caveat += (f" Its other connections do not settle it ({others_fin[i]} closed "
                           f"with FIN, {others_abort[i]} with RST).")
            else:
                caveat += " The capture has no other connection of it to compare."
        if requests_in[i] and not policy[i]:
            # (more requests than responses is unread-data-reset's: it never gets here)
            caveat += (f" The payload shows {requests_in[i]} HTTP request"
                       f"{'' if requests_in[i] == 1 else 's'} received and {responses_out[i]} "
                       f"response{'' if responses_out[i] == 1 else 's'} sent: no request "
                       f"the capture can see went unanswered, though a request body or data "
                       f"past the snap length could still be unread.")
        frames.append([own[i], peer_data[i], rst[i]])
        messages.append(
            f"{me} {addrs[i]} ended the connection from {state} with RST "
            f"(frame {rst[i]}) instead of FIN, with nothing in the capture for the RST to "
            f"answer: an abortive close, typically SO_LINGER {{on, 0}} then close(). The "
            f"{peer} gets ECONNRESET and any data in flight is lost.{caveat}")
        details.append({"confidence": confidence, "state_before": state,
                        "other_fin_closes": others_fin[i], "other_resets": others_abort[i],
                        "http_requests_in": requests_in[i],
                        "http_responses_out": responses_out[i]})
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
               "protects a later connection on the same ports from stray old segments. A close() "
               "with data still unread (a pipelined request) sends the same RST: the confidence "
               "is high only when the endpoint resets all its other connections in the capture "
               "too, or the peer sent nothing that could be unread. An endpoint that received "
               "more HTTP/1.x requests than it answered is reported as unread-data-reset "
               "instead."),
    remediation=("Close gracefully: drop SO_LINGER 0 (or the proxy's 'nolinger' option) and "
                 "let the side that closes first hold TIME_WAIT; if TIME_WAIT pressure is the "
                 "reason, let the client close first or enable net.ipv4.tcp_tw_reuse."),
    check=check,
    references=("RFC 9293 §3.6 and §3.10.5 (ABORT)", "socket(7): SO_LINGER",
                "RFC 2525 §2.17 (RST on close with unread data)"),
)
