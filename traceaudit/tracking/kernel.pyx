"""Compiled endpoint trackers: both endpoints' RFC 9293 states, segment by segment.

Vantage point: a transition caused by a segment an endpoint SENDS is placed at that frame; one
caused by a segment it RECEIVES is placed at the same frame too, i.e. the segment is assumed to
arrive when the capture saw it. For a capture taken next to one host the other host's receive
transitions really happen one path delay later. Evidence that a segment did not arrive (the
peer retransmits it) corrects the state at the retransmission. Corrections that need hindsight
(TIME_WAIT skipped, FIN_WAIT_2 expired, FINs that crossed) are flagged here and applied to the
timeline afterwards (``timeline.py``).
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t

from traceaudit.capture.tcpflags cimport ACK, FIN, RST, SYN

# States, reasons, the E_*/K_* tracker columns (NE, N_TRK), F_* flags, ANS_* and EV_HEADROOM are
# declared in kernel.pxd (Python reads them from this module). HALF and FULL do not fit a C int:
cdef extern from *:
    """
    static const int64_t traceaudit_kernel_HALF = (int64_t)1 << 31;
    static const int64_t traceaudit_kernel_FULL = (int64_t)1 << 32;
    """
    const int64_t HALF "traceaudit_kernel_HALF"
    const int64_t FULL "traceaudit_kernel_FULL"


ctypedef int64_t[:, ::1] Matrix


cdef inline int64_t _unwrap(int64_t base, int64_t ref, int64_t raw) noexcept nogil:
    """Unwrapped value of a raw 32-bit sequence number, the one nearest ``ref``."""
    cdef int64_t rel = (raw - base) & (FULL - 1)
    cdef int64_t d = rel - (ref & (FULL - 1))
    if d >= HALF:
        d -= FULL
    elif d < -HALF:
        d += FULL
    return ref + d


cdef inline int64_t _emit(Matrix ev, int64_t n_ev, int64_t c, int64_t e, int64_t ts,
                          int64_t frame, int64_t state, int64_t reason) noexcept nogil:
    ev[n_ev, 0] = c
    ev[n_ev, 1] = e
    ev[n_ev, 2] = ts
    ev[n_ev, 3] = frame
    ev[n_ev, 4] = state
    ev[n_ev, 5] = reason
    return n_ev + 1


cdef int64_t _set(Matrix trk, Matrix ev, int64_t n_ev, Py_ssize_t c, Py_ssize_t e, int64_t ts,
                  int64_t frame, int64_t state, int64_t reason) noexcept nogil:
    """Move endpoint e of connection c to ``state`` (no-op when already there)."""
    cdef Py_ssize_t o = e * NE
    if trk[c, o + E_STATE] == state:
        return n_ev
    trk[c, o + E_STATE] = state
    trk[c, o + E_STATE_TS] = ts
    if state == TIME_WAIT:
        trk[c, o + E_TW_TS] = ts
        trk[c, o + E_TW_FRAME] = frame
    elif state == FIN_WAIT_2:
        trk[c, o + E_FW2_TS] = ts
        trk[c, o + E_FW2_FRAME] = frame
    elif state == CLOSE_WAIT:
        trk[c, o + E_CW_TS] = ts
        trk[c, o + E_CW_FRAME] = frame
    return _emit(ev, n_ev, c, e, ts, frame, state, reason)


cdef inline void init_conn(Matrix trk, Py_ssize_t c, int64_t prev) noexcept nogil:
    cdef Py_ssize_t j, e, o
    for j in range(trk.shape[1]):
        trk[c, j] = 0
    for e in range(2):
        o = e * NE
        trk[c, o + E_STATE] = UNSEEN
        trk[c, o + E_RST_FRAME] = -1
        trk[c, o + E_RST_ANSWER] = -1
        trk[c, o + E_RST_STATE] = UNSEEN
        trk[c, o + E_FIN_FRAME] = -1
        trk[c, o + E_FIN_ACKED_FRAME] = -1
        trk[c, o + E_GOT_FIN_FRAME] = -1
        trk[c, o + E_TW_FRAME] = -1
        trk[c, o + E_LAST_DATA_FRAME] = -1
        trk[c, o + E_LAST_FRAME] = -1
        trk[c, o + E_FIN_RETX_FRAME] = -1
        trk[c, o + E_CW_FRAME] = -1
        trk[c, o + E_FW2_FRAME] = -1
        trk[c, o + E_SYN_LAST_FRAME] = -1
    trk[c, K_CLOSER] = -1
    trk[c, K_CLOSE_FRAME] = -1
    trk[c, K_TW_RECYCLED_FRAME] = -1
    trk[c, K_PREV] = prev
    trk[c, K_INIT] = 1


cdef inline int64_t _expire_time_wait(Matrix trk, Matrix ev, int64_t n_ev, Py_ssize_t c,
                                      int64_t now, int64_t msl2) noexcept nogil:
    """Close endpoints whose TIME_WAIT has lasted 2×MSL by ``now``."""
    # (this module calls this copy: it runs for every segment, and the C compiler inlines it
    # where the exported ``expire_time_wait`` below must take its memoryviews whole)
    cdef Py_ssize_t e, o
    cdef int64_t t
    for e in range(2):
        o = e * NE
        if trk[c, o + E_STATE] == TIME_WAIT and now >= trk[c, o + E_TW_TS] + msl2:
            t = trk[c, o + E_TW_TS] + msl2
            n_ev = _set(trk, ev, n_ev, c, e, t, -1, CLOSED, R_TW_EXPIRED)
    return n_ev


cdef int64_t expire_time_wait(Matrix trk, Matrix ev, int64_t n_ev, Py_ssize_t c, int64_t now,
                              int64_t msl2) noexcept nogil:
    """Close endpoints whose TIME_WAIT has lasted 2×MSL by ``now`` (for other compiled
    modules: declared in kernel.pxd)."""
    return _expire_time_wait(trk, ev, n_ev, c, now, msl2)


cdef inline void _close_role(Matrix trk, Py_ssize_t c, int64_t x, int64_t ts,
                             int64_t frame) noexcept nogil:
    if trk[c, K_CLOSER] < 0:
        trk[c, K_CLOSER] = x
        trk[c, K_CLOSE_FRAME] = frame
        trk[c, K_CLOSE_TS] = ts


cdef int _check_tables(Matrix trk, Matrix ev) except -1:
    if trk.shape[1] < N_TRK or ev.shape[1] < 6:
        raise ValueError("tracker tables: (n, N_TRK) and (n, 6) int64 matrices expected")
    return 0


def track_batch(const int64_t[::1] conn_ids, const uint8_t[::1] from_client,
                const uint16_t[::1] flags, const uint32_t[::1] seq, const uint32_t[::1] ack,
                const int32_t[::1] plen, const uint16_t[::1] win, const int64_t[::1] ts,
                const int64_t[::1] frame, const int64_t[:] prev_of, Matrix trk, Matrix ev,
                int64_t n_ev, int64_t msl2, int64_t fin_timeout, Py_ssize_t start):
    """Run both trackers over rows ``start``.. of a batch (capture order).

    ``prev_of[c]`` is the previous incarnation of connection c's 4-tuple (-1 when none).
    ``msl2`` and ``fin_timeout`` (ns): TIME_WAIT length and the orphaned FIN_WAIT_2 lifetime.
    ``ev`` receives (conn, endpoint, ts_ns, frame, state, reason) rows from ``n_ev`` on. Returns
    (event count, next row): it stops early, before a row, when ``ev`` has fewer than
    EV_HEADROOM free rows, so that the caller can drain it and call again.
    (``from_client`` is a bool array; ``prev_of`` may be a strided column, e.g. of flows.conn.)
    """
    cdef Py_ssize_t rows = conn_ids.shape[0]
    if not (from_client.shape[0] == rows and flags.shape[0] == rows and seq.shape[0] == rows
            and ack.shape[0] == rows and plen.shape[0] == rows and win.shape[0] == rows
            and ts.shape[0] == rows and frame.shape[0] == rows and start >= 0
            and 0 <= n_ev <= ev.shape[0]):
        raise ValueError("track_batch: columns of different lengths")
    _check_tables(trk, ev)
    cdef Py_ssize_t i, c, e, x, y, ox, oy, p
    cdef Py_ssize_t stop = rows
    cdef int64_t t, fr, f, n, s, end, a, ref, sx, sy, lf, pf, kind, sprev, fseq
    cdef bint syn, fin, rst, has_ack, fits, accept
    with nogil:
        for i in range(start, rows):
            if n_ev + EV_HEADROOM > ev.shape[0]:
                stop = i
                break
            c = conn_ids[i]
            t = ts[i]
            fr = frame[i]
            f = flags[i]
            x = 0 if from_client[i] else 1
            y = 1 - x
            ox = x * NE
            oy = y * NE
            if trk[c, K_INIT] == 0:
                p = prev_of[c]
                init_conn(trk, c, p)
                if p >= 0:
                    n_ev = _expire_time_wait(trk, ev, n_ev, p, t, msl2)
                    for e in range(2):
                        if trk[p, e * NE + E_STATE] == TIME_WAIT:
                            trk[c, K_PREV_TW] = 1
                            trk[p, K_TW_RECYCLED_FRAME] = fr
                            n_ev = _set(trk, ev, n_ev, p, e, t, fr, CLOSED, R_TW_RECYCLED)
            else:
                n_ev = _expire_time_wait(trk, ev, n_ev, c, t, msl2)
            n = plen[i]
            syn = (f & SYN) != 0
            fin = (f & FIN) != 0
            rst = (f & RST) != 0
            has_ack = (f & ACK) != 0
            # -- sequence spaces ------------------------------------------------------------
            if trk[c, ox + E_BASE_SET] == 0:
                trk[c, ox + E_BASE_SET] = 1
                trk[c, ox + E_BASE] = seq[i]
                trk[c, ox + E_NXT] = 0
            s = _unwrap(trk[c, ox + E_BASE], trk[c, ox + E_NXT], seq[i])
            end = s + n + (1 if syn else 0) + (1 if fin else 0)
            a = 0
            if has_ack:
                if trk[c, oy + E_BASE_SET] == 0:
                    # the peer has sent nothing yet: its ISN is taken as ack - 1 (as Wireshark does)
                    trk[c, oy + E_BASE_SET] = 1
                    trk[c, oy + E_BASE] = (<int64_t>ack[i] - 1) & (FULL - 1)
                    trk[c, oy + E_NXT] = 1
                ref = trk[c, oy + E_NXT]
                if trk[c, ox + E_ACK_SET] == 1 and trk[c, ox + E_ACK_MAX] > ref:
                    ref = trk[c, ox + E_ACK_MAX]
                a = _unwrap(trk[c, oy + E_BASE], ref, ack[i])
            # -- first sight of the sender: handshake or mid-stream ------------------------
            sx = trk[c, ox + E_STATE]
            if sx == UNSEEN and not syn and not rst:
                if trk[c, oy + E_STATE] == UNSEEN:
                    trk[c, K_MIDSTREAM] = 1
                    n_ev = _set(trk, ev, n_ev, c, y, t, fr, ESTABLISHED, R_MIDSTREAM)
                n_ev = _set(trk, ev, n_ev, c, x, t, fr, ESTABLISHED, R_MIDSTREAM)
            if syn and not rst:
                trk[c, ox + E_SYN_COUNT] += 1
                trk[c, ox + E_SYN_LAST_FRAME] = fr
                if trk[c, ox + E_ISN_SET] == 0:
                    trk[c, ox + E_ISN_SET] = 1
                    trk[c, ox + E_BASE] = seq[i]
                    s = 0
                    end = 1 + n + (1 if fin else 0)
                    trk[c, ox + E_NXT] = 0
                if not has_ack:
                    if sx == UNSEEN or sx == CLOSED:
                        n_ev = _set(trk, ev, n_ev, c, x, t, fr, SYN_SENT, R_SENT_SYN)
                    if trk[c, oy + E_STATE] == SYN_SENT:
                        n_ev = _set(trk, ev, n_ev, c, y, t, fr, SYN_RECEIVED, R_RECEIVED_SYN)
                else:
                    trk[c, K_SYNACK] = 1
                    if sx == UNSEEN or sx == SYN_SENT or sx == LISTEN:
                        n_ev = _set(trk, ev, n_ev, c, x, t, fr, SYN_RECEIVED, R_SENT_SYN_ACK)
                    if trk[c, oy + E_STATE] == UNSEEN:
                        n_ev = _set(trk, ev, n_ev, c, y, t, fr, SYN_SENT, R_MIDSTREAM)
                    sy = trk[c, oy + E_STATE]
                    if (sy == SYN_SENT or sy == SYN_RECEIVED) and a >= 1:
                        n_ev = _set(trk, ev, n_ev, c, y, t, fr, ESTABLISHED, R_RECEIVED_SYN_ACK)
            # -- what this segment answers (for RST analysis) -------------------------------
            if rst:
                trk[c, ox + E_RST] += 1
                if trk[c, ox + E_RST] == 1:
                    trk[c, ox + E_RST_FRAME] = fr
                    trk[c, ox + E_RST_TS] = t
                    trk[c, ox + E_RST_STATE] = trk[c, ox + E_STATE]
                    trk[c, ox + E_RST_FLAGS] = f
                    lf = trk[c, oy + E_LAST_FRAME]
                    # It answers the peer's latest segment when that came after our own last one
                    # and the RST's numbers fit it (bare RST: seq = its ack; RST|ACK: acks its end).
                    if lf >= 0 and lf > trk[c, ox + E_LAST_FRAME]:
                        pf = trk[c, oy + E_LAST_FLAGS]
                        fits = (not has_ack and (pf & ACK) != 0 and
                                <int64_t>seq[i] == trk[c, oy + E_LAST_ACKVAL]) or \
                            (has_ack and a == trk[c, oy + E_LAST_END]) or \
                            (not has_ack and (pf & ACK) == 0 and <int64_t>seq[i] == 0)
                        if fits:
                            kind = 0
                            if trk[c, oy + E_LAST_END] > 0 and (pf & FIN) != 0:
                                kind |= ANS_FIN
                                if trk[c, oy + E_FIN_COUNT] > 1:
                                    kind |= ANS_FIN_AGAIN
                            if (pf & SYN) != 0:
                                kind |= ANS_SYN
                            if trk[c, oy + E_LAST_DATA_FRAME] == lf:
                                kind |= ANS_DATA
                            trk[c, ox + E_RST_ANSWER] = lf
                            trk[c, ox + E_RST_ANSWER_KIND] = kind
                    sprev = trk[c, ox + E_STATE]
                    if not has_ack and trk[c, ox + E_RST_ANSWER] >= 0:
                        # A bare RST answering a segment comes from a host with no socket.
                        if sprev == TIME_WAIT and trk[c, ox + E_DATA_AFTER_FIN] > 0:
                            # data after its close reset the socket (Linux answers such data with
                            # RST): it never reached TIME_WAIT, the FIN came to a closed port
                            trk[c, ox + E_FLAGS] |= F_TW_NEVER
                        elif sprev == TIME_WAIT:
                            trk[c, ox + E_FLAGS] |= F_TW_SKIPPED
                        elif sprev == FIN_WAIT_2 and t - trk[c, ox + E_FW2_TS] >= fin_timeout:
                            # the orphan had outlived tcp_fin_timeout: freed, then a closed port
                            # answered (earlier, a live socket answers data after close)
                            trk[c, ox + E_FLAGS] |= F_FW2_EXPIRED
                _close_role(trk, c, x, t, fr)
                if trk[c, ox + E_STATE] != CLOSED:
                    n_ev = _set(trk, ev, n_ev, c, x, t, fr, CLOSED, R_SENT_RST)
                sy = trk[c, oy + E_STATE]
                accept = False
                if sy == SYN_SENT:
                    accept = has_ack and a == 1
                    if accept and trk[c, K_SYNACK] == 0:
                        trk[c, K_REFUSED] = 1
                elif sy != UNSEEN and sy != CLOSED:
                    accept = trk[c, oy + E_ACK_SET] == 0 or s >= trk[c, oy + E_ACK_MAX] - 1
                if accept:
                    trk[c, K_RST_ACCEPTED] = 1
                    n_ev = _set(trk, ev, n_ev, c, y, t, fr, CLOSED, R_RECEIVED_RST)
            else:
                # -- ACK: acknowledges the peer's SYN or FIN --------------------------------
                if has_ack:
                    if trk[c, ox + E_ACK_SET] == 0 or a > trk[c, ox + E_ACK_MAX]:
                        trk[c, ox + E_ACK_MAX] = a
                    trk[c, ox + E_ACK_SET] = 1
                    sy = trk[c, oy + E_STATE]
                    if sy == SYN_RECEIVED and a >= 1 and not syn:
                        n_ev = _set(trk, ev, n_ev, c, y, t, fr, ESTABLISHED, R_RECEIVED_ACK_OF_SYN)
                    if trk[c, oy + E_FIN] == 1 and trk[c, oy + E_FIN_ACKED] == 0 and \
                            a >= trk[c, oy + E_FIN_SEQ] + 1:
                        trk[c, oy + E_FIN_ACKED] = 1
                        trk[c, oy + E_FIN_ACKED_FRAME] = fr
                        sy = trk[c, oy + E_STATE]
                        if sy == FIN_WAIT_1:
                            if fin and trk[c, oy + E_GOT_FIN] == 0:
                                pass                    # FIN|ACK: straight to TIME_WAIT below
                            else:
                                n_ev = _set(trk, ev, n_ev, c, y, t, fr, FIN_WAIT_2, R_FIN_ACKED)
                        elif sy == CLOSING:
                            n_ev = _set(trk, ev, n_ev, c, y, t, fr, TIME_WAIT, R_FIN_ACKED)
                        elif sy == LAST_ACK:
                            n_ev = _set(trk, ev, n_ev, c, y, t, fr, CLOSED, R_FIN_ACKED)
                # -- data ------------------------------------------------------------------
                if n > 0:
                    trk[c, ox + E_DATA_PKTS] += 1
                    trk[c, ox + E_LAST_DATA_FRAME] = fr
                    trk[c, ox + E_LAST_DATA_TS] = t
                    if trk[c, oy + E_FIN] == 1:
                        trk[c, oy + E_DATA_AFTER_FIN] += 1
                if n <= 1 and not syn and not fin and has_ack and trk[c, ox + E_SEEN] == 1 and \
                        s == trk[c, ox + E_NXT] - 1:
                    # keepalive probe: one byte below snd_nxt, carrying nothing new
                    trk[c, ox + E_KEEPALIVES] += 1
                    if trk[c, ox + E_FIN] == 1 or trk[c, oy + E_FIN] == 1:
                        trk[c, ox + E_KEEPALIVE_HALF] += 1
                if win[i] == 0 and not syn:
                    trk[c, ox + E_ZERO_WIN] += 1
                # -- FIN -------------------------------------------------------------------
                if fin:
                    fseq = s + n
                    if trk[c, ox + E_FIN] == 0:
                        trk[c, ox + E_FIN] = 1
                        trk[c, ox + E_FIN_SEQ] = fseq
                        trk[c, ox + E_FIN_FRAME] = fr
                        trk[c, ox + E_FIN_TS] = t
                        trk[c, ox + E_FIN_COUNT] = 1
                        if trk[c, K_CLOSER] < 0:
                            _close_role(trk, c, x, t, fr)
                        elif trk[c, K_CLOSER] == y and trk[c, oy + E_FIN] == 1 and \
                                (not has_ack or a < trk[c, oy + E_FIN_SEQ] + 1):
                            # our FIN does not acknowledge the peer's: the two FINs crossed
                            trk[c, K_CLOSER] = 2
                            trk[c, ox + E_FLAGS] |= F_FINS_CROSSED
                        sx = trk[c, ox + E_STATE]
                        if sx == SYN_SENT:          # the SYN-ACK is missing from the capture
                            n_ev = _set(trk, ev, n_ev, c, x, t, fr, ESTABLISHED, R_MIDSTREAM)
                            sx = ESTABLISHED
                        if trk[c, ox + E_FLAGS] & F_FINS_CROSSED:
                            if sx == ESTABLISHED or sx == SYN_RECEIVED or sx == CLOSE_WAIT:
                                n_ev = _set(trk, ev, n_ev, c, x, t, fr, CLOSING, R_SENT_FIN)
                        elif sx == CLOSE_WAIT:
                            n_ev = _set(trk, ev, n_ev, c, x, t, fr, LAST_ACK, R_SENT_FIN)
                        elif sx == ESTABLISHED or sx == SYN_RECEIVED:
                            n_ev = _set(trk, ev, n_ev, c, x, t, fr, FIN_WAIT_1, R_SENT_FIN)
                    elif fseq == trk[c, ox + E_FIN_SEQ]:
                        trk[c, ox + E_FIN_COUNT] += 1
                        if trk[c, ox + E_FIN_RETX_FRAME] < 0:
                            trk[c, ox + E_FIN_RETX_FRAME] = fr
                        sx = trk[c, ox + E_STATE]
                        if sx == CLOSED and trk[c, ox + E_GOT_FIN] == 1 and trk[c, ox + E_RST] == 0:
                            # we took its FIN as acknowledged, but the ACK never reached it; the
                            # timeline drops that CLOSED (see timeline.py)
                            trk[c, ox + E_FIN_ACKED] = 0
                            trk[c, ox + E_FLAGS] |= F_ACK_LOST
                            n_ev = _set(trk, ev, n_ev, c, x, t, fr, LAST_ACK, R_ACK_LOST)
                    # the peer receives it
                    if trk[c, oy + E_GOT_FIN] == 0:
                        trk[c, oy + E_GOT_FIN] = 1
                        trk[c, oy + E_GOT_FIN_FRAME] = fr
                        sy = trk[c, oy + E_STATE]
                        if sy == ESTABLISHED or sy == SYN_RECEIVED:
                            n_ev = _set(trk, ev, n_ev, c, y, t, fr, CLOSE_WAIT, R_RECEIVED_FIN)
                        elif sy == FIN_WAIT_1:
                            if trk[c, oy + E_FIN_ACKED] == 1:
                                n_ev = _set(trk, ev, n_ev, c, y, t, fr, TIME_WAIT, R_RECEIVED_FIN)
                            else:
                                n_ev = _set(trk, ev, n_ev, c, y, t, fr, CLOSING, R_RECEIVED_FIN)
                        elif sy == FIN_WAIT_2:
                            n_ev = _set(trk, ev, n_ev, c, y, t, fr, TIME_WAIT, R_RECEIVED_FIN)
                        elif sy == CLOSING and trk[c, oy + E_FIN_ACKED] == 1:
                            n_ev = _set(trk, ev, n_ev, c, y, t, fr, TIME_WAIT, R_RECEIVED_FIN)
            # -- bookkeeping -------------------------------------------------------------------
            if not rst and trk[c, ox + E_STATE] == TIME_WAIT and \
                    trk[c, oy + E_LAST_FRAME] > trk[c, ox + E_TW_FRAME]:
                # answering a later segment (e.g. a retransmitted FIN) restarts the 60 s, as on
                # Linux
                trk[c, ox + E_TW_TS] = t
            if not rst and end > trk[c, ox + E_NXT]:
                trk[c, ox + E_NXT] = end
            trk[c, ox + E_SEEN] = 1
            trk[c, ox + E_LAST_FRAME] = fr
            trk[c, ox + E_LAST_TS] = t
            trk[c, ox + E_LAST_FLAGS] = f
            trk[c, ox + E_LAST_ACKVAL] = ack[i]
            trk[c, ox + E_LAST_END] = end
    return n_ev, stop


def finish(Matrix trk, Matrix ev, int64_t n_ev, Py_ssize_t n_conns, int64_t end_ts,
           int64_t msl2):
    """At capture end: expire TIME_WAITs whose 2×MSL passed before the capture ended."""
    _check_tables(trk, ev)
    if not (0 <= n_conns <= trk.shape[0] and 0 <= n_ev and n_ev + 2 * n_conns <= ev.shape[0]):
        raise ValueError("finish: too few rows for the connections or their events")
    cdef Py_ssize_t c
    with nogil:
        for c in range(n_conns):
            if trk[c, K_INIT] == 1:
                n_ev = _expire_time_wait(trk, ev, n_ev, c, end_ts, msl2)
    return n_ev
