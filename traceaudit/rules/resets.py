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
from traceaudit.tracking.states import Answered, EndpointState, Hindsight

PREMATURE_CAUSES = ("time_wait_skipped", "fin_wait_2_expired", "data_after_close")
_CLOSED_FIRST = (EndpointState.FIN_WAIT_1, EndpointState.FIN_WAIT_2, EndpointState.CLOSING,
                 EndpointState.TIME_WAIT, EndpointState.LAST_ACK)


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
    sent = v.ep(e, "rst_count") > 0
    state = v.ep(e, "rst_from_state")
    flags = v.ep(e, "rst_flags")
    answer = v.ep(e, "rst_answers_frame")
    kind = v.ep(e, "rst_answers_kind")
    rst_frame = v.ep(e, "rst_frame")
    hind = v.ep(e, "hindsight")
    fin_first = (v.ep(e, "fin_sent") == 1) & (v.ep(e, "fin_frame") < rst_frame)

    premature = np.full(v.n, -1, np.int64)
    closed_first = sent & fin_first & np.isin(state, _CLOSED_FIRST)
    data_after = closed_first & (((kind & Answered.DATA) != 0) | (v.ep(e, "data_after_fin") > 0))
    premature[data_after] = 2
    premature[closed_first & ((hind & Hindsight.FW2_EXPIRED) != 0)] = 1   # past tcp_fin_timeout
    premature[closed_first & ((hind & Hindsight.TW_SKIPPED) != 0)] = 0

    bare_answer = ((flags & ACK) == 0) & (answer >= 0)
    keepalive_timeout = (v.ep(e, "keepalives") > 0) & \
        (v.ep(p, "last_frame") < v.ep(e, "last_frame"))
    abort = (sent & ~fin_first &
             ((state == EndpointState.ESTABLISHED) | (state == EndpointState.CLOSE_WAIT)) &
             ~bare_answer & ~keepalive_timeout & (v.conn("refused") == 0))
    peer_data = v.ep(p, "last_data_frame")
    unanswered = (peer_data >= 0) & (peer_data > v.ep(e, "last_data_frame")) & \
        (peer_data < rst_frame)
    answers_data = (answer >= 0) & ((kind & Answered.DATA) != 0)
    return ResetStory(premature, abort, unanswered, answers_data)
