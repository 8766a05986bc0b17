"""unread-data-reset: close() with received data still unread makes the kernel send RST."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View, seconds
from traceaudit.rules.linger_zero_abort import is_unread
from traceaudit.rules.model import Rule, Severity
from traceaudit.rules.resets import reset_story
from traceaudit.tracking import kernel as K


def check(analysis, params):
    v = View.of(analysis)
    out = []
    for e in (0, 1) if v.n else ():
        story = reset_story(v, e)
        for c in np.flatnonzero(is_unread(story, e)).tolist():
            out.append(_finding(v, c, e, bool(story.answers_data[c])))
    return out


def _finding(v: View, c: int, e: int, answers_data: bool):
    p = 1 - e
    t = v.row(c)
    eo, po = e * K.NE, p * K.NE
    rst, rst_ts = int(t[eo + K.E_RST_FRAME]), int(t[eo + K.E_RST_TS])
    data, data_ts = int(t[po + K.E_LAST_DATA_FRAME]), int(t[po + K.E_LAST_DATA_TS])
    me, peer = f"{ENDPOINTS[e]} {v.address(c, e)}", ENDPOINTS[p]
    if answers_data:
        how = (f"{seconds(rst_ts - data_ts)} after the {peer}'s data (frame {data}) arrived, "
               f"before acknowledging it any other way")
        caveat = ("An application that read that data and then aborted with SO_LINGER 0 "
                  "would send the same packets (see linger-zero-abort).")
    else:
        how = (f"{seconds(rst_ts - data_ts)} after the {peer}'s data (frame {data}), which it "
               f"had acknowledged but never answered")
        caveat = ("A server that read the request and then aborted with SO_LINGER 0 would "
                  "send the same packets (see linger-zero-abort).")
    message = (f"{me} sent RST (frame {rst}) instead of FIN {how}: close() with data still "
               f"unread in the receive queue makes the kernel reset the connection, and the "
               f"{peer}'s pending data (including a response it may still be reading) is "
               f"lost. {caveat}")
    return v.finding(RULE, c, e, rst_ts, [data, rst], message, confidence="medium",
                     unread_data_frame=data)


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
