"""Endpoint timelines: the tracker's transition events, corrected with hindsight, per endpoint.

Three corrections need later packets and are applied here, only to the connections flagged:
- TIME_WAIT skipped: a bare RST answered the peer's retransmitted FIN, so the endpoint never
  held TIME_WAIT: its TIME_WAIT entry becomes CLOSED at the same moment.
- FIN_WAIT_2 expired: a bare RST answered the peer from FIN_WAIT_2, so the orphaned socket had
  already gone: CLOSED is placed at FIN_WAIT_2 entry + fin_timeout when that is earlier.
- FINs crossed (simultaneous close): the endpoint sent its FIN before the peer's reached it, so
  it was never in CLOSE_WAIT: FIN_WAIT_1 then CLOSING at its own FIN.
- ACK lost: the endpoint retransmitted its FIN from LAST_ACK after an ACK we took as reaching
  it; that ACK never arrived, so the CLOSED it caused is removed (it stayed in LAST_ACK).
- SYN-ACK unanswered: the server retransmitted its SYN-ACK and the client sent nothing after the
  first one, so none reached the client: it stayed in SYN_SENT (its ESTABLISHED is removed).
"""

from __future__ import annotations

import numpy as np

from traceaudit.tracking import kernel as K
from traceaudit.tracking.states import EndpointState, Reason
from traceaudit.tracking.tracker import (EV_CONN, EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE,
                                         EV_TS, Tracked)


def corrected_events(tracked: Tracked) -> np.ndarray:
    """Events sorted by (conn, endpoint, time order), with the hindsight corrections applied."""
    trk = tracked.trk
    ev = _drop_unanswered_syn_acks(tracked.events, trk)
    order = np.arange(len(ev), dtype=np.int64)
    flagged = []
    for e in (0, 1):
        flags = trk[:, e * K.NE + K.E_FLAGS]
        for c in np.flatnonzero(flags):
            flagged.append((int(c), e, int(flags[c])))
    if flagged:
        ev, order = _apply(ev.copy(), order, trk, flagged, tracked.config.fin_timeout_s)
    idx = np.lexsort((order, ev[:, EV_TS], ev[:, EV_ENDPOINT], ev[:, EV_CONN]))
    return ev[idx]


def _drop_unanswered_syn_acks(ev: np.ndarray, trk: np.ndarray) -> np.ndarray:
    """Remove what clients that evidently never got a SYN-ACK were credited with (vectorised).

    Evidence: the server sent its SYN-ACK more than once and the client sent nothing after the
    first one. Its ESTABLISHED goes, and so does every later entry other than CLOSED: a client
    that received nothing cannot have reached CLOSE_WAIT either.
    """
    if not len(ev):
        return ev
    srv = K.NE
    est = ((ev[:, EV_ENDPOINT] == 0) & (ev[:, EV_STATE] == K.ESTABLISHED) &
           (ev[:, EV_REASON] == K.R_RECEIVED_SYN_ACK))
    if not est.any():
        return ev
    est_frame = np.full(len(trk), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(est_frame, ev[est, EV_CONN], ev[est, EV_FRAME])
    client_last = trk[:, K.E_LAST_FRAME]
    lost = ((trk[:, srv + K.E_SYN_COUNT] > 1) & (client_last < trk[:, srv + K.E_SYN_LAST_FRAME]) &
            (client_last < est_frame) & (trk[:, K.E_ISN_SET] == 1))
    if not lost.any():
        return ev
    conn = ev[:, EV_CONN]
    drop = (lost[conn] & (ev[:, EV_ENDPOINT] == 0) & (ev[:, EV_FRAME] >= est_frame[conn]) &
            (ev[:, EV_STATE] != K.CLOSED))
    return ev[~drop]


def _apply(ev, order, trk, flagged, fin_timeout_s):
    keep = np.ones(len(ev), bool)
    extra, extra_order = [], []
    by_key: dict[tuple[int, int], np.ndarray] = {}
    if len(ev):
        keys = ev[:, EV_CONN] * 2 + ev[:, EV_ENDPOINT]
        wanted = {c * 2 + e for c, e, _ in flagged}
        for i in np.flatnonzero(np.isin(keys, list(wanted))):
            by_key.setdefault((int(ev[i, EV_CONN]), int(ev[i, EV_ENDPOINT])), []).append(i)
    for c, e, flags in flagged:
        rows = by_key.get((c, e), [])
        o = e * K.NE
        if flags & K.F_TW_SKIPPED:
            tw = [i for i in rows if ev[i, EV_STATE] == K.TIME_WAIT]
            if tw:
                ev[tw[0], EV_STATE] = K.CLOSED
                ev[tw[0], EV_REASON] = Reason.TIME_WAIT_SKIPPED
                for i in rows:
                    if i > tw[0] and ev[i, EV_STATE] == K.CLOSED:
                        keep[i] = False
        if flags & K.F_FW2_EXPIRED:
            closed = [i for i in rows if ev[i, EV_STATE] == K.CLOSED
                      and ev[i, EV_REASON] == K.R_SENT_RST]
            if closed:
                i = closed[0]
                ev[i, EV_REASON] = Reason.FIN_WAIT_2_EXPIRED
                expiry = trk[c, o + K.E_FW2_TS] + int(fin_timeout_s * 1e9)
                if expiry < ev[i, EV_TS]:
                    ev[i, EV_TS] = expiry
                    ev[i, EV_FRAME] = -1
        if flags & K.F_FINS_CROSSED:
            fin_frame = trk[c, o + K.E_FIN_FRAME]
            for i in rows:
                if ev[i, EV_STATE] == K.CLOSE_WAIT and ev[i, EV_FRAME] <= fin_frame:
                    keep[i] = False
                if ev[i, EV_STATE] == K.CLOSING and ev[i, EV_FRAME] == fin_frame:
                    row = ev[i].copy()
                    row[EV_STATE] = K.FIN_WAIT_1
                    extra.append(row)
                    extra_order.append(order[i] - 0.5)
        if flags & K.F_ACK_LOST:
            for j, i in enumerate(rows):
                if ev[i, EV_STATE] == K.LAST_ACK and ev[i, EV_REASON] == K.R_ACK_LOST:
                    keep[i] = False
                    if j and ev[rows[j - 1], EV_STATE] == K.CLOSED:
                        keep[rows[j - 1]] = False
    ev, order = ev[keep], order[keep].astype(np.float64)
    if extra:
        ev = np.concatenate([ev, np.array(extra)])
        order = np.concatenate([order, np.array(extra_order)])
    return ev, order


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
