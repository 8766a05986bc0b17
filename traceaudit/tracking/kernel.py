"""Compiled endpoint trackers: both endpoints' RFC 9293 states, segment by segment.

Vantage point: a transition caused by a segment an endpoint SENDS is placed at that frame; one
caused by a segment it RECEIVES is placed at the same frame too, i.e. the segment is assumed to
arrive when the capture saw it. For a capture taken next to one host the other host's receive
transitions really happen one path delay later. Evidence that a segment did not arrive (the
peer retransmits it) corrects the state at the retransmission. Corrections that need hindsight
(TIME_WAIT skipped, FIN_WAIT_2 expired, FINs that crossed) are flagged here and applied to the
timeline afterwards (``timeline.py``).
"""

from __future__ import annotations

import numpy as np

from traceaudit.capture.batch import ACK, FIN, RST, SYN
from traceaudit.jit import njit

# States (EndpointState values).
UNSEEN, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, \
    CLOSING, LAST_ACK, TIME_WAIT, CLOSED = -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
# Reasons (Reason values).
R_SENT_SYN, R_SENT_SYN_ACK, R_RECEIVED_SYN_ACK, R_RECEIVED_ACK_OF_SYN, R_SENT_FIN, \
    R_RECEIVED_FIN, R_FIN_ACKED, R_SENT_RST, R_RECEIVED_RST, R_TW_EXPIRED, R_MIDSTREAM, \
    R_RECEIVED_SYN, R_TW_RECYCLED, R_ACK_LOST = range(14)

# Per-endpoint fields: endpoint e (0 client, 1 server) uses column e * NE + field.
E_STATE = 0
E_SEEN = 1            # it has sent at least one segment
E_BASE_SET = 2
E_BASE = 3            # raw sequence number that maps to unwrapped 0
E_NXT = 4             # highest unwrapped sequence end it has sent
E_ISN_SET = 5         # it sent a SYN (ISN = unwrapped 0)
E_FIN = 6             # it sent a FIN
E_FIN_SEQ = 7         # unwrapped sequence number of its FIN
E_FIN_FRAME = 8
E_FIN_TS = 9
E_FIN_COUNT = 10      # transmissions of its FIN (retransmissions + 1)
E_FIN_ACKED = 11
E_FIN_ACKED_FRAME = 12
E_GOT_FIN = 13        # it received the peer's FIN
E_GOT_FIN_FRAME = 14
E_ACK_SET = 15
E_ACK_MAX = 16        # highest unwrapped ACK it sent (peer's sequence space): its rcv_nxt
E_RST = 17            # RST segments it sent
E_RST_FRAME = 18      # its first RST
E_RST_TS = 19
E_RST_STATE = 20      # its state just before its first RST
E_RST_FLAGS = 21      # flags of its first RST (ACK bit tells RST|ACK from a bare RST)
E_RST_ANSWER = 22     # frame of the peer segment its first RST answers, -1 = unsolicited
E_RST_ANSWER_KIND = 23  # what that segment carried: bit 1 data, 2 FIN, 4 SYN, 8 FIN again
E_TW_TS = 24          # when it entered TIME_WAIT
E_TW_FRAME = 25
E_STATE_TS = 26       # when it entered its current state
E_DATA_PKTS = 27      # segments with payload it sent
E_LAST_DATA_FRAME = 28
E_LAST_DATA_TS = 29
E_LAST_FRAME = 30     # its last segment
E_LAST_TS = 31
E_LAST_FLAGS = 32
E_LAST_ACKVAL = 33    # raw ack field of its last segment
E_LAST_END = 34       # unwrapped sequence end of its last segment
E_FIN_RETX_FRAME = 35  # first retransmission of its FIN
E_KEEPALIVES = 36     # keepalive probes it sent (seq = snd_nxt - 1, 0/1 byte, nothing new)
E_KEEPALIVE_HALF = 37  # ... of which while the connection was half-closed
E_FW2_TS = 38         # when it entered FIN_WAIT_2
E_CW_TS = 39          # when it entered CLOSE_WAIT
E_CW_FRAME = 40
E_FW2_FRAME = 41
E_SYN_COUNT = 42      # SYN (or SYN-ACK) transmissions
E_FLAGS = 43          # hindsight flags: F_TW_SKIPPED, F_FW2_EXPIRED, F_FINS_CROSSED, F_ACK_LOST,
#                       F_TW_NEVER
E_DATA_AFTER_FIN = 44  # segments with payload it received after it sent its FIN
E_ZERO_WIN = 45       # zero-window advertisements it sent
E_SYN_LAST_FRAME = 46  # its last SYN or SYN-ACK transmission
NE = 47
# Connection fields follow the two endpoint blocks.
K_INIT = 2 * NE
K_MIDSTREAM = K_INIT + 1      # the capture starts after the handshake
K_CLOSER = K_INIT + 2         # 0 client, 1 server, 2 simultaneous, -1 none
K_CLOSE_FRAME = K_INIT + 3    # first FIN or RST
K_CLOSE_TS = K_INIT + 4
K_SYNACK = K_INIT + 5         # a SYN-ACK was seen
K_REFUSED = K_INIT + 6        # SYN answered by an acceptable RST before any SYN-ACK
K_RST_ACCEPTED = K_INIT + 7   # an RST ended the connection
K_TW_RECYCLED_FRAME = K_INIT + 8  # frame of the SYN that ended this connection's TIME_WAIT
K_PREV = K_INIT + 9           # previous incarnation of the same 4-tuple, -1 when none
K_PREV_TW = K_INIT + 10       # 1 when that previous incarnation was still in TIME_WAIT
N_TRK = K_INIT + 11

F_TW_SKIPPED = 1
F_FW2_EXPIRED = 2
F_FINS_CROSSED = 4
F_ACK_LOST = 8
F_TW_NEVER = 16

ANS_DATA, ANS_FIN, ANS_SYN, ANS_FIN_AGAIN = 1, 2, 4, 8
EV_HEADROOM = 16      # more events than one segment can cause (both endpoints + a recycled one)
HALF = np.int64(1) << 31
FULL = np.int64(1) << 32


@njit(inline="always")
def _unwrap(base, ref, raw):
    """Unwrapped value of a raw 32-bit sequence number, the one nearest ``ref``."""
    rel = (np.int64(raw) - base) & (FULL - 1)
    d = rel - (ref & (FULL - 1))
    if d >= HALF:
        d -= FULL
    elif d < -HALF:
        d += FULL
    return ref + d


@njit(cache=True)
def _emit(ev, n_ev, c, e, ts, frame, state, reason):
    ev[n_ev, 0] = c
    ev[n_ev, 1] = e
    ev[n_ev, 2] = ts
    ev[n_ev, 3] = frame
    ev[n_ev, 4] = state
    ev[n_ev, 5] = reason
    return n_ev + 1


@njit(cache=True)
def _set(trk, ev, n_ev, c, e, ts, frame, state, reason):
    """Move endpoint e of connection c to ``state`` (no-op when already there)."""
    o = e * NE
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


@njit(cache=True)
def init_conn(trk, c, prev):
    trk[c, :] = 0
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


@njit(cache=True)
def expire_time_wait(trk, ev, n_ev, c, now, msl2):
    """Close endpoints whose TIME_WAIT has lasted 2×MSL by ``now``."""
    for e in range(2):
        o = e * NE
        if trk[c, o + E_STATE] == TIME_WAIT and now >= trk[c, o + E_TW_TS] + msl2:
            t = trk[c, o + E_TW_TS] + msl2
            n_ev = _set(trk, ev, n_ev, c, e, t, -1, CLOSED, R_TW_EXPIRED)
    return n_ev


@njit(cache=True)
def _close_role(trk, c, x, ts, frame):
    if trk[c, K_CLOSER] < 0:
        trk[c, K_CLOSER] = x
        trk[c, K_CLOSE_FRAME] = frame
        trk[c, K_CLOSE_TS] = ts


@njit(cache=True, nogil=True)
def track_batch(conn_ids, from_client, flags, seq, ack, plen, win, ts, frame, prev_of, trk, ev,
                n_ev, msl2, fin_timeout, start):
    """Run both trackers over rows ``start``.. of a batch (capture order).

    ``prev_of[c]`` is the previous incarnation of connection c's 4-tuple (-1 when none).
    ``msl2`` and ``fin_timeout`` (ns): TIME_WAIT length and the orphaned FIN_WAIT_2 lifetime.
    ``ev`` receives (conn, endpoint, ts_ns, frame, state, reason) rows from ``n_ev`` on. Returns
    (event count, next row): it stops early, before a row, when ``ev`` has fewer than
    EV_HEADROOM free rows, so that the caller can drain it and call again.
    """
    for i in range(start, len(conn_ids)):
        if n_ev + EV_HEADROOM > len(ev):
            return n_ev, i
        c = conn_ids[i]
        t = ts[i]
        fr = frame[i]
        f = np.int64(flags[i])
        x = 0 if from_client[i] else 1
        y = 1 - x
        ox = x * NE
        oy = y * NE
        if trk[c, K_INIT] == 0:
            p = prev_of[c]
            init_conn(trk, c, p)
            if p >= 0:
                n_ev = expire_time_wait(trk, ev, n_ev, p, t, msl2)
                for e in range(2):
                    if trk[p, e * NE + E_STATE] == TIME_WAIT:
                        trk[c, K_PREV_TW] = 1
                        trk[p, K_TW_RECYCLED_FRAME] = fr
                        n_ev = _set(trk, ev, n_ev, p, e, t, fr, CLOSED, R_TW_RECYCLED)
        else:
            n_ev = expire_time_wait(trk, ev, n_ev, c, t, msl2)
        n = np.int64(plen[i])
        syn = (f & SYN) != 0
        fin = (f & FIN) != 0
        rst = (f & RST) != 0
        has_ack = (f & ACK) != 0
        # -- sequence spaces ------------------------------------------------------------
        if trk[c, ox + E_BASE_SET] == 0:
            trk[c, ox + E_BASE_SET] = 1
            trk[c, ox + E_BASE] = np.int64(seq[i])
            trk[c, ox + E_NXT] = 0
        s = _unwrap(trk[c, ox + E_BASE], trk[c, ox + E_NXT], seq[i])
        end = s + n + (1 if syn else 0) + (1 if fin else 0)
        a = np.int64(0)
        if has_ack:
            if trk[c, oy + E_BASE_SET] == 0:
                # the peer has sent nothing yet: its ISN is taken as ack - 1 (as Wireshark does)
                trk[c, oy + E_BASE_SET] = 1
                trk[c, oy + E_BASE] = (np.int64(ack[i]) - 1) & (FULL - 1)
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
                trk[c, ox + E_BASE] = np.int64(seq[i])
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
                            np.int64(seq[i]) == trk[c, oy + E_LAST_ACKVAL]) or \
                        (has_ack and a == trk[c, oy + E_LAST_END]) or \
                        (not has_ack and (pf & ACK) == 0 and np.int64(seq[i]) == 0)
                    if fits:
                        kind = np.int64(0)
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
            # answering a later segment (e.g. a retransmitted FIN) restarts the 60 s, as on Linux
            trk[c, ox + E_TW_TS] = t
        if not rst and end > trk[c, ox + E_NXT]:
            trk[c, ox + E_NXT] = end
        trk[c, ox + E_SEEN] = 1
        trk[c, ox + E_LAST_FRAME] = fr
        trk[c, ox + E_LAST_TS] = t
        trk[c, ox + E_LAST_FLAGS] = f
        trk[c, ox + E_LAST_ACKVAL] = np.int64(ack[i])
        trk[c, ox + E_LAST_END] = end
    return n_ev, len(conn_ids)


@njit(cache=True)
def finish(trk, ev, n_ev, n_conns, end_ts, msl2):
    """At capture end: expire TIME_WAITs whose 2×MSL passed before the capture ended."""
    for c in range(n_conns):
        if trk[c, K_INIT] == 1:
            n_ev = expire_time_wait(trk, ev, n_ev, c, end_ts, msl2)
    return n_ev
