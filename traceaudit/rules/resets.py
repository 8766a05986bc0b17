"""Shared classification of the first RST each endpoint sent (for the RST rules).

One vectorised pass decides, per connection and endpoint, which story an RST tells:
premature close (with a cause), abortive close (SO_LINGER 0), close with unread data, or none
of these (refusals, answers to half-open handshakes, a host that lost the connection).

An abortive close and a close() with unread data send the same RST, so the wire alone rarely
tells them apart. Evidence comes from this connection (the RST acknowledges data that had just
arrived; a server reset after the client's last request) or from the same service's other
connections in the capture: one that closes all the others with FIN and resets only here had
data it did not read; one that resets all of them has an abort policy. For HTTP/1.x the payload
settles it: an endpoint that received more requests than it sent responses before its RST
(``http_requests_in`` / ``http_responses_out``, counted by the decoder and the tracker: a
request pipelined behind the one it answered) reset with a request unread.

Only resets the endpoint sent itself are judged: one the tracker attributes to the path
(``rst_origin``: a middlebox forged it with the endpoint's address) is middlebox-reset's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traceaudit.capture.tcpflags import ACK
from traceaudit.rules.common import View
from traceaudit.tracking.states import Answered, EndpointState, Hindsight, RstOrigin

PREMATURE_CAUSES = ("time_wait_skipped", "fin_wait_2_expired", "data_after_close")
_CLOSED_FIRST = (EndpointState.FIN_WAIT_1, EndpointState.FIN_WAIT_2, EndpointState.CLOSING,
                 EndpointState.TIME_WAIT, EndpointState.LAST_ACK)


@dataclass
class ResetStory:
    premature: np.ndarray      # index into PREMATURE_CAUSES, -1: not a premature-close RST
    abort: np.ndarray          # RST instead of FIN from ESTABLISHED / CLOSE_WAIT
    unanswered_data: np.ndarray  # the peer sent data after this endpoint's last data
    answers_data: np.ndarray   # the RST acknowledges data it had not acknowledged before
    # the same endpoint's other connections (a server: those of its address:port; a client:
    # its address's to that service), counted where it closed them
    others_fin: np.ndarray     # ... closed with its own FIN
    others_abort: np.ndarray   # ... ended with an abortive RST
    # HTTP/1.x messages the payload shows, before its RST
    requests_in: np.ndarray    # requests it received
    responses_out: np.ndarray  # responses it sent

    @property
    def pipelined(self) -> np.ndarray:
        """Aborts by an endpoint that had received more HTTP/1.x requests than it answered:
        a request was left unread (or at least unanswered) when it reset."""
        return self.abort & (self.requests_in > self.responses_out)

    @property
    def resets_everywhere(self) -> np.ndarray:
        """Its other connections (two or more) all ended with an abortive RST: a policy."""
        return (self.others_abort >= 2) & (self.others_fin == 0)

    @property
    def fins_elsewhere(self) -> np.ndarray:
        """It closed its other connections (two or more) with FIN and reset none of them."""
        return (self.others_fin >= 2) & (self.others_abort == 0)


def wire_unread(story: ResetStory, e: int) -> np.ndarray:
    """Aborts whose own connection's packets show data unread: the RST acknowledges data it
    had not acknowledged before (the data was still arriving), or the endpoint is the server
    and the client's last data (a request) was never answered. (The payload's evidence is
    ``ResetStory.pipelined``.)"""
    return story.abort & (story.answers_data | (story.unanswered_data & (e == 1)))


def is_unread(story: ResetStory, e: int) -> np.ndarray:
    """Aborts that look like close() with unread data (the rest look like SO_LINGER 0): shown
    by the connection itself (its packets, or HTTP/1.x requests in its payload that it never
    answered), or by a server that closed its other connections with FIN and reset only this
    one (a client that does so may as well have given up on a slow answer with an abort: there
    its other connections only say how sure a verdict is)."""
    own = wire_unread(story, e) | story.pipelined
    if e == 0:
        return own
    return own | (story.abort & story.fins_elsewhere)


def reset_story(v: View, e: int) -> ResetStory:
    """Endpoint ``e``'s RST story; computed once per analysis (three rules read it)."""
    key = ("reset_story", e)
    if key not in v.memo:
        v.memo[key] = _reset_story(v, e)
    return v.memo[key]


def _reset_story(v: View, e: int) -> ResetStory:
    p = 1 - e
    # a reset forged on the path with the endpoint's address tells nothing of how it closed
    sent = (v.ep(e, "rst_count") > 0) & (v.ep(e, "rst_origin") != RstOrigin.PATH)
    state = v.ep(e, "rst_from_state")
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

    abort = _aborts(v, e)
    peer_data = v.ep(p, "last_data_frame")
    unanswered = (peer_data >= 0) & (peer_data > v.ep(e, "last_data_frame")) & \
        (peer_data < rst_frame)
    answers_data = (answer >= 0) & ((kind & Answered.DATA) != 0)
    others_fin, others_abort = _elsewhere(v, e, (v.ep(e, "fin_sent") == 1) & ~abort, abort)
    return ResetStory(premature, abort, unanswered, answers_data, others_fin, others_abort,
                      v.ep(e, "http_requests_in"), v.ep(e, "http_responses_out"))


def _aborts(v: View, e: int) -> np.ndarray:
    """Endpoint ``e`` sent an RST instead of FIN from ESTABLISHED / CLOSE_WAIT (not a bare
    answer, a keep-alive timeout or a refusal)."""
    p = 1 - e
    # a reset forged on the path with the endpoint's address tells nothing of how it closed
    sent = (v.ep(e, "rst_count") > 0) & (v.ep(e, "rst_origin") != RstOrigin.PATH)
    state = v.ep(e, "rst_from_state")
    fin_first = (v.ep(e, "fin_sent") == 1) & (v.ep(e, "fin_frame") < v.ep(e, "rst_frame"))
    bare_answer = ((v.ep(e, "rst_flags") & ACK) == 0) & (v.ep(e, "rst_answers_frame") >= 0)
    keepalive_timeout = (v.ep(e, "keepalives") > 0) & \
        (v.ep(p, "last_frame") < v.ep(e, "last_frame"))
    return (sent & ~fin_first &
            ((state == EndpointState.ESTABLISHED) | (state == EndpointState.CLOSE_WAIT)) &
            ~bare_answer & ~keepalive_timeout & (v.conn("refused") == 0))


def _sibling_groups(v: View, e: int) -> tuple[np.ndarray, list]:
    """Each row's group of siblings (see ``_elsewhere``) as an index into a list of keys
    that name it across chunks (texts)."""
    ips, labels = v.ip_codes, v._hosts[1]
    service = ips[1].astype(np.int64) * 65536 + v.columns["server_port"]
    key = service if e == 1 else ips[0].astype(np.int64) * (len(labels) * 65536) + service
    keys, group = np.unique(key, return_inverse=True)
    server, port = divmod(keys % (len(labels) * 65536), 65536)
    if e == 1:
        names = [(labels[s], p) for s, p in zip(server.tolist(), port.tolist())]
    else:
        client = keys // (len(labels) * 65536)
        names = [(labels[c], labels[s], p) for c, s, p in
                 zip(client.tolist(), server.tolist(), port.tolist())]
    return group.reshape(-1), names


def sibling_counts(v: View, params=None) -> dict:
    """The ``TOTALS`` summary of a chunk: per endpoint, whether any row aborts, and per
    sibling group its (FIN closes, aborts)."""
    out = {"any": [], "groups": []}
    for e in (0, 1):
        abort = _aborts(v, e)
        fin = (v.ep(e, "fin_sent") == 1) & ~abort
        group, names = _sibling_groups(v, e)
        fins = np.bincount(group, weights=fin, minlength=len(names)).astype(np.int64)
        aborts = np.bincount(group, weights=abort, minlength=len(names)).astype(np.int64)
        out["any"].append(bool(abort.any()))
        out["groups"].append({k: (f, a) for k, f, a in zip(names, fins.tolist(),
                                                             aborts.tolist())})
    return out


def merge_sibling_counts(a: dict, b: dict) -> dict:
    for e in (0, 1):
        a["any"][e] = a["any"][e] or b["any"][e]
        groups = a["groups"][e]
        for k, (f, n) in b["groups"][e].items():
            f0, n0 = groups.get(k, (0, 0))
            groups[k] = (f0 + f, n0 + n)
    return a


#: whole-capture summaries a flat read (``retire/flat.py``) sums over its chunks
TOTALS = {"reset_siblings": (sibling_counts, merge_sibling_counts)}


def _elsewhere(v: View, e: int, fin: np.ndarray,
               abort: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How many of each connection's siblings (same server address:port for the server; same
    client address and server address:port for the client) ``fin`` and ``abort`` mark."""
    zeros = np.zeros(v.n, np.int64)
    if v.totals is not None:                   # a chunk: the counts of the whole capture
        whole = v.totals["reset_siblings"]
        if not whole["any"][e]:
            return zeros, zeros
        group, names = _sibling_groups(v, e)
        counts = np.array([whole["groups"][e][k] for k in names], np.int64).reshape(-1, 2)
        return counts[group, 0] - fin, counts[group, 1] - abort
    if not abort.any():
        return zeros, zeros
    service = v.service_codes(1).astype(np.int64)
    key = service if e == 1 else \
        v.ip_codes[0].astype(np.int64) * (int(service.max()) + 1) + service
    _, group = np.unique(key, return_inverse=True)
    group = group.reshape(-1)
    fins = np.bincount(group, weights=fin, minlength=group.max() + 1).astype(np.int64)
    aborts = np.bincount(group, weights=abort, minlength=group.max() + 1).astype(np.int64)
    return fins[group] - fin, aborts[group] - abort
