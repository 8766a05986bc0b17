"""Shared classification of the first RST each endpoint sent (for the RST rules).

One vectorised pass decides, per connection and endpoint, which story an RST tells:
premature close (with a cause), abortive close (SO_LINGER 0), close with unread data, or none
of these (refusals, answers to half-open handshakes, a host that lost the connection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traceaudit.capture.tcpflags import ACK
from traceaudit.rules.common import View
from traceaudit.tracking import kernel as K

PREMATURE_CAUSES = ("time_wait_skipped", "fin_wait_2_expired", "data_after_close")
_CLOSED_FIRST = (K.FIN_WAIT_1, K.FIN_WAIT_2, K.CLOSING, K.TIME_WAIT, K.LAST_ACK)


@dataclass
class ResetStory:
    premature: np.ndarray      # index into PREMATURE_CAUSES, -1: not a premature-close RST
    abort: np.ndarray          # RST instead of FIN from ESTABLISHED / CLOSE_WAIT
    unanswered_data: np.ndarray  # the peer sent data after this endpoint's last data
    answers_data: np.ndarray   # the RST acknowledges data it had not acknowledged before


def reset_story(v: View, e: int) -> ResetStory:
    """Endpoint ``e``'s RST story; computed once per analysis (three rules read it)."""
    key = ("reset_story", e)
    if key not in v.memo:
        v.memo[key] = _reset_story(v, e)
    return v.memo[key]


def _reset_story(v: View, e: int) -> ResetStory:
    p = 1 - e
    sent = v.ep(e, K.E_RST) > 0
    state = v.ep(e, K.E_RST_STATE)
    flags = v.ep(e, K.E_RST_FLAGS)
    answer = v.ep(e, K.E_RST_ANSWER)
    kind = v.ep(e, K.E_RST_ANSWER_KIND)
    rst_frame = v.ep(e, K.E_RST_FRAME)
    hind = v.ep(e, K.E_FLAGS)
    fin_first = (v.ep(e, K.E_FIN) == 1) & (v.ep(e, K.E_FIN_FRAME) < rst_frame)

    premature = np.full(v.n, -1, np.int64)
    closed_first = sent & fin_first & np.isin(state, _CLOSED_FIRST)
    data_after = closed_first & (((kind & K.ANS_DATA) != 0) | (v.ep(e, K.E_DATA_AFTER_FIN) > 0))
    premature[data_after] = 2
    premature[closed_first & ((hind & K.F_FW2_EXPIRED) != 0)] = 1   # past tcp_fin_timeout
    premature[closed_first & ((hind & K.F_TW_SKIPPED) != 0)] = 0

    bare_answer = ((flags & ACK) == 0) & (answer >= 0)
    keepalive_timeout = (v.ep(e, K.E_KEEPALIVES) > 0) & \
        (v.ep(p, K.E_LAST_FRAME) < v.ep(e, K.E_LAST_FRAME))
    abort = (sent & ~fin_first & ((state == K.ESTABLISHED) | (state == K.CLOSE_WAIT)) &
             ~bare_answer & ~keepalive_timeout & (v.conn(K.K_REFUSED) == 0))
    peer_data = v.ep(p, K.E_LAST_DATA_FRAME)
    unanswered = (peer_data >= 0) & (peer_data > v.ep(e, K.E_LAST_DATA_FRAME)) & \
        (peer_data < rst_frame)
    answers_data = (answer >= 0) & ((kind & K.ANS_DATA) != 0)
    return ResetStory(premature, abort, unanswered, answers_data)
