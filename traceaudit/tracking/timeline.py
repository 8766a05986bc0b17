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
- SYN-ACK unanswered: the server retransmitted its SYN-ACK and the client sent nothing after the
  first one, so none reached the client: it stayed in SYN_SENT (its ESTABLISHED is removed).
"""

from __future__ import annotations

import numpy as np

from traceaudit.jit import njit, prefetch
from traceaudit.tracking import kernel as K
from traceaudit.tracking.states import EndpointState, Reason
from traceaudit.tracking.tracker import (EV_CONN, EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE,
                                         EV_TS, Tracked)


def corrected_events(tracked: Tracked) -> np.ndarray:
    """Events sorted by (conn, endpoint, time order), with the hindsight corrections applied.

    Two compiled passes: rows are grouped by endpoint with a counting sort
    (``_group_kernel``); then (``_correct_kernel``) a flagged endpoint's rows are corrected in
    a scratch copy and each group is put in time order (emission order breaks ties) straight
    into the result.
    """
    trk = tracked.trk
    ev = tracked.events
    if not len(ev):
        return ev[:0].copy()
    keep = _unanswered_syn_ack_keep(ev, trk)
    if keep is None:
        keep = np.ones(len(ev), np.bool_)
    flags = np.empty(2 * len(trk), np.int64)          # E_FLAGS by conn * 2 + endpoint
    flags[0::2] = trk[:, K.E_FLAGS]
    flags[1::2] = trk[:, K.NE + K.E_FLAGS]
    return _corrected(ev, keep, flags, trk, int(tracked.config.fin_timeout_s * 1e9),
                      int(Reason.TIME_WAIT_SKIPPED), int(Reason.FIN_WAIT_2_EXPIRED))


def _corrected(ev, keep, flags, trk, fin_timeout_ns, r_tw_skipped, r_fw2_expired):
    """The kept rows of ``ev``, grouped by endpoint, corrected where flagged, time-ordered."""
    # the large arrays are NumPy's, not the kernels' own: NumPy asks for huge pages, which
    # saves ~10,000 page faults for 860,000 events
    start = np.zeros(len(flags) + 1, np.int64)
    perm = np.empty(len(ev), np.int64)
    n_flagged = _group_kernel(ev, keep, flags, start, perm, np.empty(len(flags), np.int64))
    # every flagged row may add one FIN_WAIT_1 row (crossed FINs)
    rows = int(start[-1]) + n_flagged
    out = np.empty((rows, ev.shape[1]), ev.dtype)
    # scratch for one flagged endpoint's rows (the kernels allocate nothing: a kernel that
    # does makes numba import its array library, ~12 ms, when the kernel is loaded)
    widest = int(np.diff(start).max()) if len(flags) else 0
    scratch = np.empty((widest + 1, ev.shape[1]), ev.dtype)
    n = _correct_kernel(ev, flags, trk, start, perm, out, np.empty(rows, np.int64),
                        np.empty(rows, np.int64), scratch, np.empty(widest, np.int64),
                        np.empty(widest, np.bool_), np.empty(widest, np.bool_),
                        fin_timeout_ns, r_tw_skipped, r_fw2_expired)
    return out[:n]                  # (the unused tail is at most one row per flagged row)


@njit(cache=True, nogil=True)
def _group_kernel(ev, keep, flags, start, perm, pos):
    """Counting sort of the rows marked in ``keep`` by endpoint (conn * 2 + endpoint):
    fills ``start`` (each endpoint's first position, then the total) and ``perm`` (row
    numbers, by endpoint, in emission order). Returns how many rows are of flagged
    endpoints."""
    n_keys = len(flags)
    n_flagged = 0
    for i in range(len(ev)):
        if keep[i]:
            k = ev[i, EV_CONN] * 2 + ev[i, EV_ENDPOINT]
            start[k + 1] += 1
            if flags[k] != 0:
                n_flagged += 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    for k in range(n_keys):
        pos[k] = start[k]
    for i in range(len(ev)):
        if keep[i]:
            k = ev[i, EV_CONN] * 2 + ev[i, EV_ENDPOINT]
            perm[pos[k]] = i
            pos[k] += 1
    return n_flagged


#: rows of ``perm`` the correction kernel asks the CPU to fetch ahead of the one it copies:
#: the rows it reads are scattered over the whole event table (grouping by endpoint), and a
#: cache miss per row was most of the kernel's time (22 -> 11 ms for 860,000 rows)
_AHEAD = 16


@njit(cache=True, nogil=True)
def _correct_kernel(ev, flags, trk, start, perm, out, ts, order, sub, sub_keys, sub_keep,
                    sub_extra, fin_timeout_ns, r_tw_skipped, r_fw2_expired):
    """``corrected_events`` from the grouped rows (``_group_kernel``), written to ``out``
    (``ts``, ``order``: scratch of its length; ``sub``..: scratch for the widest group, and
    one more row of ``sub`` to hold a row being moved). Returns the rows used."""
    n_keys = len(flags)
    w = 0
    width = ev.shape[1]
    rows = start[n_keys]
    for k in range(n_keys):
        a = start[k]
        b = start[k + 1]
        if a == b:
            continue
        g = w
        if flags[k] == 0:
            for j in range(a, b):
                if j + _AHEAD < rows:
                    prefetch(ev, perm[j + _AHEAD], 0)
                r = perm[j]
                for c in range(width):
                    out[w, c] = ev[r, c]
                ts[w] = ev[r, EV_TS]
                order[w] = 2 * r + 1
                w += 1
        else:
            for j in range(a, b):
                for c in range(width):
                    sub[j - a, c] = ev[perm[j], c]
                sub_keys[j - a] = k
                sub_keep[j - a] = True
                sub_extra[j - a] = False
            _apply_kernel(sub, sub_keys, b - a, flags, trk, sub_keep, sub_extra, fin_timeout_ns,
                          r_tw_skipped, r_fw2_expired)
            for j in range(b - a):
                r = perm[a + j]
                if sub_extra[j]:
                    # the FIN_WAIT_1 added for crossed FINs sorts just before its CLOSING
                    for c in range(width):
                        out[w, c] = sub[j, c]
                    out[w, EV_STATE] = K.FIN_WAIT_1
                    ts[w] = sub[j, EV_TS]
                    order[w] = 2 * r
                    w += 1
                if sub_keep[j]:
                    for c in range(width):
                        out[w, c] = sub[j, c]
                    ts[w] = sub[j, EV_TS]
                    order[w] = 2 * r + 1
                    w += 1
        # time order inside the group (rows mostly arrive in it): insertion sort by (ts, order)
        for j in range(g + 1, w):
            tx = ts[j]
            ox = order[j]
            if ts[j - 1] < tx or (ts[j - 1] == tx and order[j - 1] < ox):
                continue
            held = len(sub) - 1
            for c in range(width):
                sub[held, c] = out[j, c]
            h = j - 1
            while h >= g and (ts[h] > tx or (ts[h] == tx and order[h] > ox)):
                for c in range(width):
                    out[h + 1, c] = out[h, c]
                ts[h + 1] = ts[h]
                order[h + 1] = order[h]
                h -= 1
            for c in range(width):
                out[h + 1, c] = sub[held, c]
            ts[h + 1] = tx
            order[h + 1] = ox
    return w


def _unanswered_syn_ack_keep(ev: np.ndarray, trk: np.ndarray) -> np.ndarray | None:
    """Rows to keep, None for all: remove what clients that evidently never got a SYN-ACK were
    credited with (vectorised).

    Evidence: the server sent its SYN-ACK more than once and the client sent nothing after the
    first one. Its ESTABLISHED goes, and so does every later entry other than CLOSED: a client
    that received nothing cannot have reached CLOSE_WAIT either.
    """
    srv = K.NE
    client_last = trk[:, K.E_LAST_FRAME]
    # the evidence that needs no event first (cheap, and usually nobody has it)
    maybe = ((trk[:, srv + K.E_SYN_COUNT] > 1) &
             (client_last < trk[:, srv + K.E_SYN_LAST_FRAME]) & (trk[:, K.E_ISN_SET] == 1))
    if not maybe.any():
        return None
    cand = np.flatnonzero(maybe[ev[:, EV_CONN]])          # those connections' event rows
    c = ev[cand, EV_CONN]
    est = cand[(ev[cand, EV_STATE] == K.ESTABLISHED) &
               (ev[cand, EV_REASON] == K.R_RECEIVED_SYN_ACK) & (ev[cand, EV_ENDPOINT] == 0)]
    if not len(est):
        return None
    est_frame = np.full(len(trk), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(est_frame, ev[est, EV_CONN], ev[est, EV_FRAME])
    lost = maybe & (client_last < est_frame)
    drop = cand[lost[c] & (ev[cand, EV_ENDPOINT] == 0) & (ev[cand, EV_FRAME] >= est_frame[c]) &
                (ev[cand, EV_STATE] != K.CLOSED)]
    if not len(drop):
        return None
    keep = np.ones(len(ev), np.bool_)
    keep[drop] = False
    return keep


@njit(cache=True, nogil=True)
def _apply_kernel(ev, keys, n, flags, trk, keep, extra, fin_timeout_ns, r_tw_skipped,
                  r_fw2_expired):
    """``ev``: the flagged pairs' rows, grouped by pair (``keys``: conn * 2 + endpoint), in
    emission order within a group; corrected in place. Marks dropped rows in ``keep`` and the
    CLOSING rows to copy as FIN_WAIT_1 in ``extra``. Only the first ``n`` rows are used."""
    a = 0
    while a < n:
        key = keys[a]
        b = a
        while b < n and keys[b] == key:
            b += 1
        c = key >> 1
        o = (key & 1) * K.NE
        f = flags[key]
        if f & K.F_TW_SKIPPED:
            tw = -1
            for i in range(a, b):
                if ev[i, EV_STATE] == K.TIME_WAIT:
                    tw = i
                    break
            if tw >= 0:
                ev[tw, EV_STATE] = K.CLOSED
                ev[tw, EV_REASON] = r_tw_skipped
                for i in range(tw + 1, b):
                    if ev[i, EV_STATE] == K.CLOSED:
                        keep[i] = False
        if f & K.F_TW_NEVER:
            for i in range(a, b):
                if ev[i, EV_STATE] == K.TIME_WAIT:
                    keep[i] = False
                    break
        if f & K.F_FW2_EXPIRED:
            for i in range(a, b):
                if ev[i, EV_STATE] == K.CLOSED and ev[i, EV_REASON] == K.R_SENT_RST:
                    # flagged only when the RST came fin_timeout or more after FIN_WAIT_2
                    ev[i, EV_REASON] = r_fw2_expired
                    ev[i, EV_TS] = trk[c, o + K.E_FW2_TS] + fin_timeout_ns
                    ev[i, EV_FRAME] = -1
                    break
        if f & K.F_FINS_CROSSED:
            fin_frame = trk[c, o + K.E_FIN_FRAME]
            for i in range(a, b):
                if ev[i, EV_STATE] == K.CLOSE_WAIT and ev[i, EV_FRAME] <= fin_frame:
                    keep[i] = False
                if ev[i, EV_STATE] == K.CLOSING and ev[i, EV_FRAME] == fin_frame:
                    extra[i] = True
        if f & K.F_ACK_LOST:
            for i in range(a, b):
                if ev[i, EV_STATE] == K.LAST_ACK and ev[i, EV_REASON] == K.R_ACK_LOST:
                    keep[i] = False
                    if i > a and ev[i - 1, EV_STATE] == K.CLOSED:
                        keep[i - 1] = False
        a = b


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
