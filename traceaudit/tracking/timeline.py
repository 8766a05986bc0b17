"""Endpoint timelines: the tracker's transition events, corrected with hindsight, per endpoint.

Corrections that need later packets are applied here, only to the connections flagged:
- TIME_WAIT skipped: a bare RST answered the peer's FIN although nothing else explains it, so
  the endpoint's TIME_WAIT (or the FIN_WAIT_2 before it) was gone: its TIME_WAIT entry becomes
  CLOSED at the same moment.
- TIME_WAIT never reached: the peer sent data after the endpoint's FIN and a bare RST answered
  it: the data reset the socket (Linux resets on data after close), so its TIME_WAIT entry is
  removed and it goes to CLOSED at its RST.
- FIN_WAIT_2 expired: a bare RST answered the peer from FIN_WAIT_2 at least fin_timeout after
  the endpoint entered it, so the orphaned socket had already gone: CLOSED is placed at
  FIN_WAIT_2 entry + fin_timeout (the kernel flags only these; an earlier RST came from the
  live socket answering data after close and stays as it is).
- FINs crossed (simultaneous close): the endpoint sent its FIN before the peer's reached it, so
  it was never in CLOSE_WAIT: FIN_WAIT_1 then CLOSING at its own FIN.
- ACK lost: the endpoint retransmitted its FIN from LAST_ACK after an ACK we took as reaching
  it; that ACK never arrived, so the CLOSED it caused is removed (it stayed in LAST_ACK).
- ACK of the SYN-ACK lost: the endpoint retransmitted its SYN-ACK after the peer's ACK, so that
  ACK never reached it: the ESTABLISHED it caused is removed (it stayed in SYN_RECEIVED).
- SYN-ACK unanswered: the server retransmitted its SYN-ACK and the client sent nothing after the
  first one, so none reached the client: it stayed in SYN_SENT (its ESTABLISHED is removed).
"""

from __future__ import annotations

import numpy as np

from traceaudit.tracking._timeline import _correct_kernel, _group_kernel
from traceaudit.tracking.states import EndpointState, Reason
from traceaudit.tracking.tracker import (EV_CONN, EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE,
                                         EV_TS, Tracked)


def corrected_events(tracked: Tracked) -> np.ndarray:
    """Events sorted by (conn, endpoint, time order), with the hindsight corrections applied.

    Two compiled passes (``_timeline``): rows are grouped by endpoint with a counting sort
    (``_group_kernel``); then (``_correct_kernel``) a flagged endpoint's rows are corrected in
    a scratch copy (``_apply_kernel``) and each group is put in time order (emission order
    breaks ties) straight into the result.
    """
    ends = tracked.endpoints
    ev = tracked.events
    if not len(ev):
        return ev[:0].copy()
    keep = _unanswered_syn_ack_keep(ev, ends, tracked.conns)
    if keep is None:
        keep = np.ones(len(ev), np.bool_)
    # each endpoint's hindsight bits by conn * 2 + endpoint (a contiguous copy)
    flags = np.ascontiguousarray(ends["hindsight"]).reshape(-1)
    return _corrected(ev, keep, flags, ends, int(tracked.config.fin_timeout_s * 1e9))


def _corrected(ev, keep, flags, ends, fin_timeout_ns):
    """The kept rows of ``ev``, grouped by endpoint, corrected where flagged, time-ordered."""
    # the large arrays are NumPy's, not the kernels' own: NumPy asks for huge pages, which
    # saves ~10,000 page faults for 860,000 events
    start = np.zeros(len(flags) + 1, np.int64)
    perm = np.empty(len(ev), np.int64)
    # (bool arrays reach the kernels as uint8 views; the kernels take C-contiguous int64 tables)
    n_flagged = _group_kernel(ev, keep.view(np.uint8), flags, start, perm,
                              np.empty(len(flags), np.int64))
    # every flagged row may add one FIN_WAIT_1 row (crossed FINs)
    rows = int(start[-1]) + n_flagged
    out = np.empty((rows, ev.shape[1]), ev.dtype)
    # scratch for one flagged endpoint's rows (the kernels allocate nothing)
    widest = int(np.diff(start).max()) if len(flags) else 0
    scratch = np.empty((widest + 1, ev.shape[1]), ev.dtype)
    n = _correct_kernel(ev, flags, ends, start, perm, out, np.empty(rows, np.int64),
                        np.empty(rows, np.int64), scratch, np.empty(widest, np.int64),
                        np.empty(widest, np.uint8), np.empty(widest, np.uint8),
                        fin_timeout_ns)
    return out[:n]                  # (the unused tail is at most one row per flagged row)


def _unanswered_syn_ack_keep(ev: np.ndarray, ends: np.ndarray,
                             conns: np.ndarray) -> np.ndarray | None:
    """Rows to keep, None for all: remove what clients that evidently never got a SYN-ACK were
    credited with (vectorised).

    Evidence: the server sent its SYN-ACK more than once and the client sent nothing after the
    first one. Its ESTABLISHED goes, and so does every later entry other than CLOSED: a client
    that received nothing cannot have reached CLOSE_WAIT either. (The facts are the current
    incarnation's: earlier incarnations' rows are left as they are.)
    """
    client, server = ends[:, 0], ends[:, 1]
    client_last = client["last_frame"]
    # the evidence that needs no event first (cheap, and usually nobody has it)
    maybe = ((server["syn_count"] > 1) & (client_last < server["syn_last_frame"]) &
             (client["isn_seen"] == 1))
    if not maybe.any():
        return None
    cand = np.flatnonzero(maybe[ev[:, EV_CONN]])          # those connections' event rows
    c = ev[cand, EV_CONN]
    est = cand[(ev[cand, EV_STATE] == EndpointState.ESTABLISHED) &
               (ev[cand, EV_REASON] == Reason.RECEIVED_SYN_ACK) & (ev[cand, EV_ENDPOINT] == 0) &
               (ev[cand, EV_FRAME] > conns["incarnation_frame"][c])]
    if not len(est):
        return None
    est_frame = np.full(len(ends), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(est_frame, ev[est, EV_CONN], ev[est, EV_FRAME])
    lost = maybe & (client_last < est_frame)
    drop = cand[lost[c] & (ev[cand, EV_ENDPOINT] == 0) & (ev[cand, EV_FRAME] >= est_frame[c]) &
                (ev[cand, EV_STATE] != EndpointState.CLOSED)]
    if not len(drop):
        return None
    keep = np.ones(len(ev), np.bool_)
    keep[drop] = False
    return keep


def final_states(events: np.ndarray, n_conns: int) -> np.ndarray:
    """(n_conns, 2) state values at capture end; UNSEEN where an endpoint has no entry."""
    out = np.full((n_conns, 2), int(EndpointState.UNSEEN), np.int64)
    if len(events):
        # events are sorted by (conn, endpoint, time): the last row of each group wins
        out[events[:, EV_CONN], events[:, EV_ENDPOINT]] = events[:, EV_STATE]
    return out


def states_at(events: np.ndarray, n_conns: int, ts_ns: int) -> np.ndarray:
    """(n_conns, 2) state values at ``ts_ns`` (UNSEEN before an endpoint's first entry)."""
    return final_states(events[events[:, EV_TS] <= ts_ns], n_conns)
