"""unread-data-reset: close() with received data still unread makes the kernel send RST."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View, seconds
from traceaudit.rules.model import Rule, Severity
from traceaudit.rules.resets import TOTALS, is_unread, reset_story, wire_unread  # noqa: F401 (TOTALS: for a flat read)


def check(analysis, params):
    v = View.of(analysis)
    out = []
    for e in (0, 1) if v.n else ():
        story = reset_story(v, e)
        hits = np.flatnonzero(is_unread(story, e))
        out += _findings(v, hits, e, story.answers_data[hits].tolist(),
                         wire_unread(story, e)[hits].tolist(),
                         story.requests_in[hits].tolist(), story.responses_out[hits].tolist(),
                         story.fins_elsewhere[hits].tolist(),
                         story.resets_everywhere[hits].tolist(),
                         story.others_fin[hits].tolist(), story.others_abort[hits].tolist())
    return out


def _findings(v: View, hits: np.ndarray, e: int, answers_data: list[bool], wire: list[bool],
              requests_in: list[int], responses_out: list[int],
              fins_elsewhere: list[bool], resets_everywhere: list[bool],
              others_fin: list[int], others_abort: list[int]):
    peer = ENDPOINTS[1 - e]
    rst, rst_ts, own = v.take(hits, e, "rst_frame", "rst_ns", "last_data_frame")
    data, data_ts = v.take(hits, 1 - e, "last_data_frame", "last_data_ns")
    conns = hits.tolist()
    addrs = v.addresses(hits, e)
    siblings = "connections to this service" if e == 0 else "connections"
    frames, messages, details = [], [], []
    for i, c in enumerate(conns):
        elsewhere = (f"It closed its {others_fin[i]} other {siblings} in the capture with FIN "
                     f"and reset only this one: an SO_LINGER 0 policy would have reset them "
                     f"all.")
        if answers_data[i]:
            how = (f"{seconds(rst_ts[i] - data_ts[i])} after the {peer}'s data (frame "
                   f"{data[i]}) arrived, before acknowledging it any other way")
            caveat = ("An application that read that data and then aborted with SO_LINGER 0 "
                      "would send the same packets (see linger-zero-abort).")
        elif wire[i]:
            how = (f"{seconds(rst_ts[i] - data_ts[i])} after the {peer}'s data (frame "
                   f"{data[i]}), which it had acknowledged but never answered")
            caveat = ("A server that read the request and then aborted with SO_LINGER 0 would "
                      "send the same packets (see linger-zero-abort).")
        else:
            how = (f"after answering the {peer}'s data (its last data frame {own[i]}, the "
                   f"{peer}'s frame {data[i]})")
            caveat = (f"The wire shows nothing unanswered: the unread data came with what it "
                      f"did read (e.g. a request pipelined behind the one it answered, in the "
                      f"same segment). {elsewhere}")
        pipelined = requests_in[i] > responses_out[i]
        if pipelined:
            # the payload shows it: a request came in that was never answered
            confidence = "high"
            caveat = (f"It received {_count(requests_in[i], 'HTTP request')} and answered "
                      f"{responses_out[i]} before the RST: "
                      f"{'a request' if requests_in[i] - responses_out[i] == 1 else 'requests'}"
                      f" pipelined behind what it answered, visible in the payload, went "
                      f"unanswered (HTTP/1.x message starts the capture shows).")
            if fins_elsewhere[i]:
                caveat += f" {elsewhere}"
        elif wire[i] and fins_elsewhere[i]:
            caveat = elsewhere
            confidence = "high"
        else:
            confidence = "medium"
        if (wire[i] or pipelined) and resets_everywhere[i]:
            caveat += (f" It ended its {others_abort[i]} other {siblings} with RST too, "
                       f"though, as an SO_LINGER 0 policy would.")
        frames.append([data[i], rst[i]])
        messages.append(
            f"{ENDPOINTS[e]} {addrs[i]} sent RST (frame {rst[i]}) instead of FIN {how}: "
            f"close() with data still unread in the receive queue makes the kernel reset the "
            f"connection, and the {peer}'s pending data (including a response it may still be "
            f"reading) is lost. {caveat}")
        details.append({"confidence": confidence, "unread_data_frame": data[i],
                        "other_fin_closes": others_fin[i], "other_resets": others_abort[i],
                        "http_requests_in": requests_in[i],
                        "http_responses_out": responses_out[i]})
    return v.findings(RULE, conns, e, rst_ts, frames, messages, details)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


RULE = Rule(
    code="TA105",
    name="unread-data-reset",
    title="RST on close() with unread received data",
    severity=Severity.WARNING,
    rationale=("When an application closes a socket whose receive queue still holds data, TCP "
               "sends RST instead of FIN (RFC 2525 §2.17, RFC 9293 §3.6: Linux, BSD, "
               "Windows). The peer gets ECONNRESET, and data it had not yet read — often the "
               "very response it is waiting for — is discarded by its own kernel. Typical "
               "causes: a server that answers and closes without reading the rest of the "
               "request (HTTP pipelining, an unread request body), or a client that gives up "
               "mid-response."),
    remediation=("Read (drain) what the peer sent before close(), or shutdown(SHUT_WR) first "
                 "and read until EOF; in HTTP servers consume or bound request bodies before "
                 "closing, and send 'Connection: close' when a connection will not be reused."),
    check=check,
    references=("RFC 2525 §2.17", "RFC 9293 §3.6 (closing)", "RFC 9112 §9.6 (tear-down)"),
)
