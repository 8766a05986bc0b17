"""Compiled Zeek view: Zeek's own TCP connection table, endpoint states, ``history`` letters and
``conn_state``, segment by segment (numba; no per-packet Python).

This follows Zeek's TCP analyzer (``TCPSessionAdapter::Process``, ``UpdateStateMachine``,
``IsReuse``, ``ConnectionClosed`` and the timers, ``TCP_Reassembler`` gaps) and the ``conn_state``
function of ``base/protocols/conn/main.zeek``. The rules, with their sources, are written up in
``docs/zeek-compat.md``.

Zeek's connections are not ours: Zeek splits a 4-tuple on its own reuse rule and on its removal
timers (5 s after a close, the 5 s attempt timer, inactivity ...). So this kernel keeps its own
table of *live* Zeek connections, one per 4-tuple slot at most (``slot_live[slot]``), reusing the
4-tuple slot our flow builder already found for the segment. A live connection's working state is
a row of ``zc``; a removed one leaves only its output row (``out`` / ``out_hist``) and its ``zc``
row goes back to a free list, so memory follows the number of *concurrent* connections.

Timers are evaluated lazily: Zeek runs timers on packet time before it handles a packet, and a
connection's state is frozen between its own packets, so asking "would a timer have removed it by
now?" when its next packet arrives gives the same answer as running a timer queue. (Zeek's
``max_timer_expires`` cap of 300 timers per packet is not emulated.)

Speed: the per-segment path is written out in ``zeek_batch`` itself, with the rare cases (timer
due, SYN on a known tuple, new connection, out-of-order data, acked data never seen, close) in
helpers. A helper that takes arrays and is too big for LLVM to inline costs an atomic
incref/decref pair per array per call, which would dominate the per-packet cost.
"""

from __future__ import annotations

import numpy as np

from traceaudit.capture.batch import ACK, FIN, RST, SYN
from traceaudit.flows.assign import F_CLIENT_IS_A, F_IPV, F_SLOT, F_TUNNELED
from traceaudit.jit import njit

# Zeek endpoint states (TCP_ENDPOINT_*; the script constants have the same values).
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

# conn_state codes (index into CONN_STATES).
CONN_STATES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH",
               "SHR", "OTH")
CS_S0, CS_S1, CS_SF, CS_REJ, CS_S2, CS_S3, CS_RSTO, CS_RSTR, CS_RSTOS0, CS_RSTRH, CS_SH, \
    CS_SHR, CS_OTH = range(13)

# Per-segment capture facts (optional input column; see ZeekTracker.add).
SEG_BAD_CSUM = 1       # TCP checksum verified and wrong
SEG_PAYLOAD_CUT = 2    # payload not fully captured (snaplen): not given to the reassembler
SEG_HEADER_CUT = 4     # TCP header incl. options not fully captured: Zeek ignores the segment
SEG_BAD_IP_CSUM = 8    # IPv4 header checksum wrong: Zeek drops it before connection lookup

# Live-connection fields (columns of ``zc``).
Z_ROW = 0             # its output row
Z_SLOT = 1
Z_ORIG_IS_A = 2       # 1 when Zeek's originator is endpoint A of the slot
Z_LAST_T = 3          # Zeek's Conn::last_time (ns)
Z_SEEN = 4            # hist_seen bit mask (responder bits << 16)
Z_INACT = 5           # inactivity timeout (ns)
Z_T_ATTEMPT = 6       # pending timers (ns; -1 none)
Z_T_EXP1 = 7          # expire timer chain armed at creation
Z_T_EXP2 = 8          # expire timer chain armed by a half close
Z_T_PARTIAL = 9
Z_T_RESET = 10
Z_T_DELETE = 11
Z_PARTIAL = 12        # TCPSessionAdapter::is_partial
Z_FPS = 13            # first_packet_seen bits: 1 orig, 2 resp
Z_FIRST_SYNACK = 14   # the first processed packet was an (unflipped) SYN-ACK from the originator
Z_NPK = 15            # packets processed
Z_TMIN = 16           # earliest pending timer (ns; NEVER when none): the fast-path check
ZE = 17               # endpoint blocks start here: orig at ZE, resp at ZE + NEP

# Endpoint fields (offset within an endpoint block).
P_STATE = 0
P_PREV = 1
P_START = 2           # start_seq (raw 32-bit)
P_LAST = 3            # last_seq
P_ACKSEQ = 4          # highest ack the peer sent for this endpoint's data
P_DID_CLOSE = 5
P_FIN_CNT = 6
P_FIN_SEQ = 7         # relative
P_RST_CNT = 8
P_HL_SYN = 9          # hist_last_SYN / FIN / RST (relative)
P_HL_FIN = 10
P_HL_RST = 11
P_CNT_C = 12          # scaled history counters and thresholds: C, T, W, G
P_THR_C = 13
P_CNT_T = 14
P_THR_T = 15
P_CNT_W = 16
P_THR_W = 17
P_CNT_G = 18
P_THR_G = 19
P_PKTS = 20           # packets processed (ConnSize)
P_R_LAST = 21         # reassembler: relative seq delivered up to (starts at 1)
P_R_TRIM = 22         # reassembler: trimmed (acked) up to
P_NBLK = 23           # reassembler: out-of-order blocks held
P_BLK = 24            # NBLK pairs (start, end), sorted by start
NBLK = 4
NEP = P_BLK + 2 * NBLK
NZ = ZE + 2 * NEP

# Output row fields (columns of ``out``).
O_SLOT = 0
O_ORIG_IS_A = 1
O_IPV = 2
O_STATE = 3           # conn_state code, -1 while live
O_ORIG_PKTS = 4
O_RESP_PKTS = 5
O_START_TS = 6
O_FIRST_FRAME = 7
O_LAST_FRAME = 8
O_HLEN = 9            # history length (letters beyond HMAX are counted, not stored)
O_LIVE = 10           # its zc row while live, -1 once removed
O_TUNNELED = 11
O_CONN = 12           # our connection id of its first packet
NO = 13
HMAX = 48

# Parameters (``prm``), durations in ns.
PR_IGNORE_CSUM = 0
PR_ATTEMPT = 1        # tcp_attempt_delay
PR_CLOSE_DELAY = 2    # tcp_close_delay
PR_PARTIAL_CLOSE = 3  # tcp_partial_close_delay
PR_RESET_DELAY = 4    # tcp_reset_delay
PR_SYN_TIMEOUT = 5    # tcp_SYN_timeout (first expire timer)
PR_SESSION_TIMER = 6  # tcp_session_timer (expire timer period)
PR_LINGER = 7         # tcp_connection_linger
PR_INACT_TCP = 8      # tcp_inactivity_timeout
PR_INACT_INIT = 9     # udp_inactivity_timeout (a TCP connection's timeout until the handshake)
PR_INACT_LONG = 10    # Conn::port_inactivity_timeouts value
N_PRM = 11

# hist_seen bits (Zeek's TCP_Endpoint::HIST_*).
H_SYN, H_FIN, H_RST, H_FIN_RST, H_DATA, H_ACK, H_MULTI = 1, 2, 4, 8, 0x10, 0x20, 0x40

M32 = np.int64(0xFFFFFFFF)
NEVER = np.int64(1) << 62
TOO_LARGE = 1048576
CH_S, CH_H, CH_A, CH_D, CH_F, CH_R, CH_I, CH_Q, CH_T, CH_W, CH_C, CH_G = (
    ord(c) for c in "SHADFRIQTWCG")
CH_CARET = ord("^")


@njit(inline="always")
def _sdelta(a, b):
    """Signed 32-bit difference a - b of two raw sequence numbers (Zeek's seq_delta)."""
    d = (a - b) & M32
    if d >= 0x80000000:
        d -= 0x100000000
    return d


@njit(inline="always")
def _add(out, out_hist, row, ch, is_orig):
    n = out[row, O_HLEN]
    if n < HMAX:
        out_hist[row, n] = ch if is_orig else ch + 32
    out[row, O_HLEN] = n + 1


@njit(inline="always")
def _add_raw(out, out_hist, row, ch):
    n = out[row, O_HLEN]
    if n < HMAX:
        out_hist[row, n] = ch
    out[row, O_HLEN] = n + 1


@njit(inline="always")
def _check(zc, z, out, out_hist, e, mask, ch):
    """Connection::CheckHistory: True when already seen; else records the letter."""
    m = mask if e == 0 else mask << 16
    if zc[z, Z_SEEN] & m:
        return True
    zc[z, Z_SEEN] |= m
    _add(out, out_hist, zc[z, Z_ROW], ch, e == 0)
    return False


@njit(inline="always")
def _scaled(zc, z, out, out_hist, e, cnt, ch):
    """Connection::ScaledHistoryEntry, base 10: letter at the 1st, 10th, 100th ... event."""
    b = ZE + e * NEP
    zc[z, b + cnt] += 1
    if zc[z, b + cnt] == zc[z, b + cnt + 1]:
        _add(out, out_hist, zc[z, Z_ROW], ch, e == 0)
        zc[z, b + cnt + 1] *= 10


@njit(inline="always")
def _handshake(s):
    return s <= SYN_ACK_SENT


@njit(cache=True)
def _set_state(zc, z, e, s, prm):
    """TCP_Endpoint::SetState, with the switch to tcp_inactivity_timeout at handshake end."""
    b = ZE + e * NEP
    st = zc[z, b + P_STATE]
    if s != st:
        if not _handshake(s) and _handshake(st) and _handshake(zc[z, ZE + (1 - e) * NEP + P_STATE]):
            zc[z, Z_INACT] = prm[PR_INACT_TCP]
        zc[z, b + P_PREV] = st
        zc[z, b + P_STATE] = s


@njit(cache=True)
def _flip(zc, z, out, out_hist, rewrite):
    """Connection::FlipRoles (+ the adapter's): swap endpoints; '^' after the history so far,
    or (``rewrite``) the history re-read as if flipped at creation: '^' + case-swapped letters."""
    for k in range(NEP):
        t = zc[z, ZE + k]
        zc[z, ZE + k] = zc[z, ZE + NEP + k]
        zc[z, ZE + NEP + k] = t
    zc[z, Z_ORIG_IS_A] ^= 1
    zc[z, Z_PARTIAL] = 0
    f = zc[z, Z_FPS]
    zc[z, Z_FPS] = ((f & 1) << 1) | ((f & 2) >> 1)
    row = zc[z, Z_ROW]
    if rewrite:
        n = min(out[row, O_HLEN], HMAX - 1)
        for k in range(n, 0, -1):
            c = out_hist[row, k - 1]
            if 65 <= c <= 90:
                c += 32
            elif 97 <= c <= 122:
                c -= 32
            out_hist[row, k] = c
        out_hist[row, 0] = CH_CARET
        out[row, O_HLEN] += 1
        s = zc[z, Z_SEEN]
        zc[z, Z_SEEN] = ((s & 0xFFFF) << 16) | (s >> 16)
    else:
        _add_raw(out, out_hist, row, CH_CARET)


@njit(cache=True)
def _size(zc, z, e):
    """TCP_Endpoint::Size (only used for REJ)."""
    b = ZE + e * NEP
    st = zc[z, b + P_STATE]
    if st == INACTIVE:
        return 0
    pst = zc[z, ZE + (1 - e) * NEP + P_STATE]
    if zc[z, b + P_PREV] == SYN_SENT and st == RESET and pst == INACTIVE:
        return 0
    a = _sdelta(zc[z, b + P_LAST], zc[z, b + P_START])
    k = _sdelta(zc[z, b + P_ACKSEQ], zc[z, b + P_START])
    s = max(a, k)
    if s > 0:
        s -= 1
    if zc[z, b + P_FIN_CNT] > 0 and s > 0:
        s -= 1
    return max(s, 0)


@njit(cache=True)
def conn_state_code(zc, z, out, out_hist):
    """``conn_state()`` of base/protocols/conn/main.zeek."""
    os_ = zc[z, ZE + P_STATE]
    rs = zc[z, ZE + NEP + P_STATE]
    o_inact = os_ == INACTIVE or os_ == PARTIAL
    r_inact = rs == INACTIVE or rs == PARTIAL
    if rs == RESET:
        if os_ == SYN_SENT or os_ == SYN_ACK_SENT or (
                os_ == RESET and _size(zc, z, 0) == 0 and _size(zc, z, 1) == 0):
            return CS_REJ
        return CS_RSTRH if o_inact else CS_RSTR
    if os_ == RESET:
        if r_inact:
            return CS_RSTOS0 if _rstos0_history(out, out_hist, zc[z, Z_ROW]) else CS_OTH
        return CS_RSTO
    if rs == CLOSED and os_ == CLOSED:
        return CS_SF
    if os_ == CLOSED:
        return CS_SH if r_inact else CS_S2
    if rs == CLOSED:
        return CS_SHR if o_inact else CS_S3
    if os_ == SYN_SENT and rs == INACTIVE:
        return CS_S0
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return CS_S1
    return CS_OTH


@njit(cache=True)
def _rstos0_history(out, out_hist, row):
    """History fully matches /^?S[^HAFGIQ]*R.*/."""
    n = min(out[row, O_HLEN], HMAX)
    k = 0
    if k < n and out_hist[row, k] == CH_CARET:
        k += 1
    if k >= n or out_hist[row, k] != CH_S:
        return False
    k += 1
    while k < n:
        c = out_hist[row, k]
        if c == CH_R:
            return True
        if c == CH_H or c == CH_A or c == CH_F or c == CH_G or c == CH_I or c == CH_Q:
            return False
        k += 1
    return False


@njit(cache=True)
def _set_tmin(zc, z):
    t = NEVER
    for f in (Z_T_ATTEMPT, Z_T_EXP1, Z_T_EXP2, Z_T_PARTIAL, Z_T_RESET, Z_T_DELETE):
        v = zc[z, f]
        if v >= 0 and v < t:
            t = v
    zc[z, Z_TMIN] = t


@njit(cache=True)
def _timers_remove(zc, z, now, prm):
    """Would one of the connection's timers have removed it before a packet at ``now``?
    Consumes the one-shot timers that ran without removing it."""
    td = zc[z, Z_T_DELETE]
    if td >= 0 and td <= now:
        return True
    os_ = zc[z, ZE + P_STATE]
    rs = zc[z, ZE + NEP + P_STATE]
    o_closed = zc[z, ZE + P_DID_CLOSE] == 1
    r_closed = zc[z, ZE + NEP + P_DID_CLOSE] == 1
    t = zc[z, Z_T_ATTEMPT]
    if t >= 0 and t <= now:
        zc[z, Z_T_ATTEMPT] = -1
        if (os_ == SYN_SENT or os_ == SYN_ACK_SENT) and rs == INACTIVE:
            return True
    t = zc[z, Z_T_PARTIAL]
    if t >= 0 and t <= now:
        zc[z, Z_T_PARTIAL] = -1
        if os_ != INACTIVE and rs != INACTIVE and not (o_closed and r_closed) and \
                os_ != RESET and rs != RESET:
            return True
    t = zc[z, Z_T_RESET]
    if t >= 0 and t <= now:
        return True
    last = zc[z, Z_LAST_T]
    # ExpireTimer's removal condition (state is frozen until the next packet)
    cond = (o_closed or r_closed) and (
        (o_closed and r_closed) or os_ == RESET or rs == RESET or os_ == INACTIVE or
        rs == INACTIVE)
    if os_ == INACTIVE and rs == INACTIVE:
        cond = True
    period = prm[PR_SESSION_TIMER]
    for f in (Z_T_EXP1, Z_T_EXP2):
        t = zc[z, f]
        if t >= 0 and t <= now:
            last_fire = t + (now - t) // period * period
            if cond and last_fire > last + prm[PR_LINGER]:
                return True
            zc[z, f] = last_fire + period
    _set_tmin(zc, z)
    return last + zc[z, Z_INACT] <= now


@njit(cache=True)
def _is_reuse(zc, z, flags, seq):
    """TCPSessionAdapter::IsReuse."""
    if not flags & SYN:
        return False
    co = 0
    if flags & ACK:
        if zc[z, ZE + P_STATE] != INACTIVE:
            return False
        co = 1
    closed = zc[z, ZE + P_DID_CLOSE] == 1 or zc[z, ZE + NEP + P_DID_CLOSE] == 1
    if closed:
        return True
    cb = ZE + co * NEP
    if seq == zc[z, cb + P_START]:
        return False
    # a SYN answering a SYN-ACK seen first (SYN/SYN-ACK reversal) is not reuse
    return not (not flags & ACK and zc[z, cb + P_STATE] == SYN_ACK_SENT and
                zc[z, ZE + NEP + P_STATE] == INACTIVE and seq == zc[z, ZE + NEP + P_START])


@njit(cache=True)
def _data_sent(zc, z, e, sq, ln):
    """The reassembler's view of new payload: contiguous delivery plus held blocks."""
    b = ZE + e * NEP
    ack = _sdelta(zc[z, b + P_ACKSEQ], zc[z, b + P_START])
    if sq < ack:
        if sq + ln <= ack:
            return
        ln -= ack - sq
        sq = ack
    end = sq + ln
    if end <= zc[z, b + P_R_LAST]:
        return
    # insert [sq, end) keeping blocks sorted by start
    n = zc[z, b + P_NBLK]
    k = 0
    while k < n and zc[z, b + P_BLK + 2 * k] < sq:
        k += 1
    if k < n and zc[z, b + P_BLK + 2 * k] == sq:
        zc[z, b + P_BLK + 2 * k + 1] = max(zc[z, b + P_BLK + 2 * k + 1], end)
    elif n < NBLK:
        for j in range(n, k, -1):
            zc[z, b + P_BLK + 2 * j] = zc[z, b + P_BLK + 2 * j - 2]
            zc[z, b + P_BLK + 2 * j + 1] = zc[z, b + P_BLK + 2 * j - 1]
        zc[z, b + P_BLK + 2 * k] = sq
        zc[z, b + P_BLK + 2 * k + 1] = end
        zc[z, b + P_NBLK] = n + 1
    else:
        # Out of block slots (rare): merge into the neighbouring block (may hide a hole).
        j = k if k < n else n - 1
        zc[z, b + P_BLK + 2 * j] = min(zc[z, b + P_BLK + 2 * j], sq)
        zc[z, b + P_BLK + 2 * j + 1] = max(zc[z, b + P_BLK + 2 * j + 1], end)
    _deliver(zc, z, b)


@njit(cache=True)
def _deliver(zc, z, b):
    while zc[z, b + P_NBLK] > 0 and zc[z, b + P_BLK] <= zc[z, b + P_R_LAST]:
        zc[z, b + P_R_LAST] = max(zc[z, b + P_R_LAST], zc[z, b + P_BLK + 1])
        _pop_first(zc, z, b)


@njit(inline="always")
def _pop_first(zc, z, b):
    n = zc[z, b + P_NBLK]
    for j in range(1, n):
        zc[z, b + P_BLK + 2 * j - 2] = zc[z, b + P_BLK + 2 * j]
        zc[z, b + P_BLK + 2 * j - 1] = zc[z, b + P_BLK + 2 * j + 1]
    zc[z, b + P_NBLK] = n - 1


@njit(inline="always")
def _clean(zc, z, e):
    b = ZE + e * NEP
    st = zc[z, b + P_STATE]
    return st == ESTABLISHED or (st == CLOSED and zc[z, b + P_PREV] == ESTABLISHED)


@njit(cache=True)
def _ack_received(zc, z, out, out_hist, e, sq):
    """TCP_Reassembler::AckReceived for endpoint e's data: acked sequence space that never
    arrived is a content gap (G/g), reported only while both endpoints are 'clean'."""
    b = ZE + e * NEP
    if zc[z, b + P_FIN_CNT] > 0:
        fs = zc[z, b + P_FIN_SEQ]
        if sq >= fs:
            sq = fs - 1
    if sq <= zc[z, b + P_R_TRIM]:
        return
    zc[z, b + P_R_TRIM] = sq
    if sq <= zc[z, b + P_R_LAST]:
        return
    if sq <= 2 and zc[z, Z_PARTIAL] == 1:
        return
    gap = False
    while zc[z, b + P_NBLK] > 0 and zc[z, b + P_BLK] < sq:
        if zc[z, b + P_BLK] > zc[z, b + P_R_LAST]:
            gap = True
        zc[z, b + P_R_LAST] = max(zc[z, b + P_R_LAST], zc[z, b + P_BLK + 1])
        _pop_first(zc, z, b)
    if sq > zc[z, b + P_R_LAST]:
        gap = True
        zc[z, b + P_R_LAST] = sq
    if gap and _clean(zc, z, e) and _clean(zc, z, 1 - e):
        _scaled(zc, z, out, out_hist, e, P_CNT_G, CH_G)


@njit(cache=True)
def _connection_closed(zc, z, e, prm):
    """TCPSessionAdapter::ConnectionClosed: did_close and the removal timers it arms."""
    b = ZE + e * NEP
    pb = ZE + (1 - e) * NEP
    if zc[z, b + P_DID_CLOSE] == 1:
        return
    zc[z, b + P_DID_CLOSE] = 1
    last = zc[z, Z_LAST_T]
    if zc[z, b + P_STATE] == RESET or zc[z, pb + P_DID_CLOSE] == 1 or \
            zc[z, pb + P_STATE] == INACTIVE:
        for f in (Z_T_ATTEMPT, Z_T_EXP1, Z_T_EXP2, Z_T_PARTIAL, Z_T_RESET):
            zc[z, f] = -1                     # CancelTimers
        zc[z, Z_T_DELETE] = last + prm[PR_CLOSE_DELAY]
    elif zc[z, b + P_PREV] == INACTIVE:
        zc[z, Z_T_PARTIAL] = last + prm[PR_PARTIAL_CLOSE]
    else:
        zc[z, Z_T_EXP2] = last + prm[PR_SESSION_TIMER]
    _set_tmin(zc, z)


@njit(cache=True)
def _established_event(zc, z, sport, dport, e, likely, long_ports, prm):
    """base/protocols/conn/inactivity.zeek: connection_established → port_inactivity_timeouts."""
    if e == 1:
        rp, op = sport, dport
    else:
        rp, op = dport, sport
    svc = rp
    if zc[z, ZE + P_STATE] == INACTIVE and not likely[rp] and likely[op]:
        svc = op
    if long_ports[svc]:
        zc[z, Z_INACT] = prm[PR_INACT_LONG]


@njit(cache=True)
def _finalize(zc, z, out, out_hist, slot_live, free, st):
    """Remove live connection z: its conn_state and counts go to its output row."""
    row = zc[z, Z_ROW]
    out[row, O_STATE] = conn_state_code(zc, z, out, out_hist)
    out[row, O_ORIG_PKTS] = zc[z, ZE + P_PKTS]
    out[row, O_RESP_PKTS] = zc[z, ZE + NEP + P_PKTS]
    out[row, O_ORIG_IS_A] = zc[z, Z_ORIG_IS_A]
    out[row, O_LIVE] = -1
    if slot_live[zc[z, Z_SLOT]] == z:
        slot_live[zc[z, Z_SLOT]] = -1
    free[st[1]] = z
    st[1] += 1


@njit(cache=True)
def _new_conn(zc, z, out, out_hist, row, s, orig_is_a, flipped, now, frame, ipv, tunneled, conn,
              prm):
    for k in range(NZ):
        zc[z, k] = 0
    zc[z, Z_ROW] = row
    zc[z, Z_SLOT] = s
    zc[z, Z_ORIG_IS_A] = orig_is_a
    zc[z, Z_LAST_T] = now
    zc[z, Z_INACT] = prm[PR_INACT_INIT]
    zc[z, Z_T_ATTEMPT] = -1
    zc[z, Z_T_EXP1] = now + prm[PR_SYN_TIMEOUT]
    zc[z, Z_T_EXP2] = -1
    zc[z, Z_T_PARTIAL] = -1
    zc[z, Z_T_RESET] = -1
    zc[z, Z_T_DELETE] = -1
    zc[z, Z_TMIN] = zc[z, Z_T_EXP1]
    for e in range(2):
        b = ZE + e * NEP
        for t in (P_THR_C, P_THR_T, P_THR_W, P_THR_G):
            zc[z, b + t] = 1
        zc[z, b + P_R_LAST] = 1
    for k in range(NO):
        out[row, k] = 0
    out[row, O_SLOT] = s
    out[row, O_ORIG_IS_A] = orig_is_a
    out[row, O_IPV] = ipv
    out[row, O_STATE] = -1
    out[row, O_START_TS] = now
    out[row, O_FIRST_FRAME] = frame
    out[row, O_LAST_FRAME] = frame
    out[row, O_LIVE] = z
    out[row, O_TUNNELED] = tunneled
    out[row, O_CONN] = conn
    if flipped:
        _add_raw(out, out_hist, row, CH_CARET)


@njit(cache=True, nogil=True)
def zeek_batch(conn_ids, from_client, sport, dport, flags, seq, ack, plen, win, ts, frame,
               seg_flags, use_seg_flags, fl_conn, slot_live, our_zrow, zc, free, out, out_hist,
               st, likely, long_ports, prm, start):
    """Run rows ``start``.. of a batch through the Zeek view. Returns the next row: it stops
    early, before a row, when the live table or the output rows are full (caller grows them).

    ``st`` = [output rows used, free live rows, latest packet time]; ``likely`` /
    ``long_ports`` are bool[65536]."""
    ignore_csum = prm[PR_IGNORE_CSUM] == 1
    for i in range(start, len(conn_ids)):
        if st[1] < 1 or st[0] >= len(out):
            return i
        sf = seg_flags[i] if use_seg_flags else 0
        if sf & SEG_BAD_IP_CSUM and not ignore_csum:
            continue
        c = conn_ids[i]
        s = fl_conn[c, F_SLOT]
        src_is_a = from_client[i] == (fl_conn[c, F_CLIENT_IS_A] == 1)
        now = ts[i]
        st[2] = max(st[2], now)
        f = np.int64(flags[i])
        sq = np.int64(seq[i])
        z = slot_live[s]
        if z >= 0 and (now >= zc[z, Z_TMIN] or now >= zc[z, Z_LAST_T] + zc[z, Z_INACT]) and \
                _timers_remove(zc, z, now, prm):
            _finalize(zc, z, out, out_hist, slot_live, free, st)
            z = -1
        if z >= 0 and f & SYN and _is_reuse(zc, z, f, sq):
            _finalize(zc, z, out, out_hist, slot_live, free, st)
            z = -1
        if z < 0:
            st[1] -= 1
            z = free[st[1]]
            row = st[0]
            st[0] += 1
            flip = False
            if (f & (SYN | ACK)) != SYN:         # WantConnection: partial or SYN-ACK start
                sp0 = sport[i]
                dp0 = dport[i]
                if likely[sp0]:
                    if likely[dp0]:
                        flip = (f & SYN) == 0 and sp0 < dp0
                    else:
                        flip = True
            orig_is_a = (not src_is_a) if flip else src_is_a
            _new_conn(zc, z, out, out_hist, row, s, 1 if orig_is_a else 0, flip, now, frame[i],
                      fl_conn[c, F_IPV], fl_conn[c, F_TUNNELED], c, prm)
            slot_live[s] = z
        row = zc[z, Z_ROW]
        out[row, O_LAST_FRAME] = frame[i]
        our_zrow[c] = row
        e = 0 if src_is_a == (zc[z, Z_ORIG_IS_A] == 1) else 1
        if sf & SEG_HEADER_CUT:
            continue
        if sf & SEG_BAD_CSUM and not ignore_csum:
            _scaled(zc, z, out, out_hist, e, P_CNT_C, CH_C)
            continue
        ln = np.int64(plen[i])
        # A connection that began with an unflipped SYN-ACK is flipped by the next ACK or data
        # segment (Zeek >= 5.1); its history then reads as if flipped at creation ('^h').
        if zc[z, Z_FIRST_SYNACK] == 1 and out[row, O_HLEN] == 1 and out_hist[row, 0] == CH_H \
                and zc[z, ZE + P_STATE] == SYN_ACK_SENT and zc[z, ZE + NEP + P_STATE] == INACTIVE \
                and (f & (SYN | RST)) == 0 and ((f & ACK) != 0 or ln > 0):
            _flip(zc, z, out, out_hist, True)
            _set_state(zc, z, 1, ESTABLISHED, prm)
            e = 1 - e
        if zc[z, Z_NPK] == 0 and (f & (SYN | ACK)) == (SYN | ACK) and e == 0:
            zc[z, Z_FIRST_SYNACK] = 1
        ak = np.int64(ack[i])
        wn = np.int64(win[i])
        sp = np.int64(sport[i])
        dp = np.int64(dport[i])
        paycut = (sf & SEG_PAYLOAD_CUT) != 0
        # ---- TCPSessionAdapter::Process for this segment, sent by endpoint e (0 orig) ----
        is_orig_param = e == 0
        syn = (f & SYN) != 0
        fin = (f & FIN) != 0
        rst = (f & RST) != 0
        ackf = (f & ACK) != 0
        # SetPartialStatus
        fps = zc[z, Z_FPS]
        if e == 0:
            if not fps & 1:
                zc[z, Z_PARTIAL] = 1 if (not syn or ackf) else 0
        elif not fps & 2 and zc[z, Z_PARTIAL] == 0:
            zc[z, Z_PARTIAL] = 0 if syn else 1

        b = ZE + e * NEP
        pb = ZE + (1 - e) * NEP
        seg = ln + (1 if syn else 0) + (1 if fin else 0) - (ln if rst else 0)
        end = (sq + seg) & M32
        est = zc[z, b + P_STATE]
        # init_endpoint
        reinit = False
        if est == INACTIVE:
            if syn:
                zc[z, b + P_START] = sq
                zc[z, b + P_ACKSEQ] = sq
                zc[z, b + P_LAST] = end
            else:
                zc[z, b + P_START] = (sq - 1) & M32
                zc[z, b + P_ACKSEQ] = (sq - 1) & M32
                zc[z, b + P_LAST] = sq
        elif est == SYN_SENT or est == SYN_ACK_SENT:
            reinit = syn and sq != zc[z, b + P_START]
        elif est == ESTABLISHED or est == PARTIAL:
            reinit = syn
        elif est == RESET:
            reinit = syn and zc[z, b + P_PREV] == INACTIVE
        if reinit:
            zc[z, b + P_START] = sq
            zc[z, b + P_ACKSEQ] = sq
            zc[z, b + P_LAST] = end
        rel = _sdelta(sq, zc[z, b + P_START])
        underflow = rel < 0

        # update_history
        bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
        if bits > 1:
            if fin and rst:
                _check(zc, z, out, out_hist, e, H_FIN_RST, CH_I)
            else:
                _check(zc, z, out, out_hist, e, H_MULTI, CH_Q)
        elif bits == 1:
            if syn:
                code = CH_H if ackf else CH_S
                if _check(zc, z, out, out_hist, e, H_SYN, code) and rel != zc[z, b + P_HL_SYN]:
                    _add(out, out_hist, zc[z, Z_ROW], code, e == 0)
                zc[z, b + P_HL_SYN] = rel
            if fin:
                if _check(zc, z, out, out_hist, e, H_FIN, CH_F) and rel + ln != zc[z, b + P_HL_FIN]:
                    _add(out, out_hist, zc[z, Z_ROW], CH_F, e == 0)
                zc[z, b + P_HL_FIN] = rel + ln
            if rst:
                if _check(zc, z, out, out_hist, e, H_RST, CH_R) and rel != zc[z, b + P_HL_RST]:
                    _add(out, out_hist, zc[z, Z_ROW], CH_R, e == 0)
                zc[z, b + P_HL_RST] = rel
        elif ln > 0:
            # seen-bit test here, so the common case makes no call (see the module docstring)
            if not zc[z, Z_SEEN] & (H_DATA << (16 * e)):
                _check(zc, z, out, out_hist, e, H_DATA, CH_D)
        elif ackf and not zc[z, Z_SEEN] & (H_ACK << (16 * e)):
            _check(zc, z, out, out_hist, e, H_ACK, CH_A)

        # update_window: zero windows (scaling never turns a non-zero window into zero)
        if wn == 0 and not rst and zc[z, pb + P_STATE] != CLOSED and est != RESET:
            _scaled(zc, z, out, out_hist, e, P_CNT_W, CH_W)

        if not (zc[z, ZE + P_DID_CLOSE] == 1 and zc[z, ZE + NEP + P_DID_CLOSE] == 1):
            zc[z, Z_LAST_T] = now
        if fin:
            zc[z, b + P_FIN_CNT] += 1
            zc[z, b + P_FIN_SEQ] = rel + seg
        if rst:
            zc[z, b + P_RST_CNT] += 1

        rel_ack = 0
        if ackf:
            if zc[z, pb + P_STATE] == INACTIVE:
                rel_ack = 1
                a1 = (ak - 1) & M32                 # init_peer
                zc[z, pb + P_START] = a1
                zc[z, pb + P_ACKSEQ] = a1
                zc[z, pb + P_LAST] = a1
            else:
                rel_ack = _sdelta(ak, zc[z, pb + P_START])
                if rel_ack < 0:
                    rel_ack = 0
                elif not rst:                        # update_ack_seq
                    da = _sdelta(ak, zc[z, pb + P_ACKSEQ])
                    if not (ak == 0 and da > TOO_LARGE) and da > 0:
                        zc[z, pb + P_ACKSEQ] = ak

        # update_last_seq (retransmissions)
        last = zc[z, b + P_LAST]
        dl = _sdelta(end, last)
        if (syn or rst) and (dl > TOO_LARGE or dl < -TOO_LARGE):
            pass
        elif fin and last == ((zc[z, b + P_START] + 1) & M32):
            zc[z, b + P_LAST] = end
        elif est == RESET:
            pass
        elif dl > 0:
            zc[z, b + P_LAST] = end
        elif ln > 0:
            _scaled(zc, z, out, out_hist, e, P_CNT_T, CH_T)

        # UpdateStateMachine
        do_close = False
        pst = zc[z, pb + P_STATE]
        if est == INACTIVE:
            if syn:
                if e == 0:
                    _set_state(zc, z, e, SYN_ACK_SENT if ackf else SYN_SENT, prm)
                    zc[z, Z_T_ATTEMPT] = now + prm[PR_ATTEMPT]
                    zc[z, Z_TMIN] = min(zc[z, Z_TMIN], zc[z, Z_T_ATTEMPT])
                else:
                    if not ackf and pst == SYN_ACK_SENT and sq == zc[z, b + P_START]:
                        # SYN/SYN-ACK reversal: the SYN sender becomes the originator.
                        _flip(zc, z, out, out_hist, False)
                        e = 0
                        b, pb = pb, b
                        _set_state(zc, z, 1, ESTABLISHED, prm)
                        zc[z, Z_FPS] |= 1
                    if zc[z, pb + P_STATE] == SYN_SENT:
                        _set_state(zc, z, 1 - e, ESTABLISHED, prm)
                    _set_state(zc, z, e, ESTABLISHED, prm)
                    if zc[z, pb + P_STATE] != PARTIAL and prm[PR_INACT_LONG] > 0:
                        _established_event(zc, z, sp, dp, e, likely, long_ports, prm)
            if fin:
                _set_state(zc, z, e, CLOSED, prm)
                do_close = True
            if rst:
                _set_state(zc, z, e, RESET, prm)
                do_close = True
            if zc[z, b + P_STATE] == INACTIVE:
                if not is_orig_param and ln == 0 and zc[z, ZE + P_STATE] == SYN_SENT:
                    pass                             # an eccentric ACK of the SYN
                elif ackf and zc[z, pb + P_STATE] == ESTABLISHED:
                    _set_state(zc, z, e, ESTABLISHED, prm)
                    zc[z, Z_PARTIAL] = 0
                    zc[z, Z_FPS] |= 1 if is_orig_param else 2
                else:
                    _set_state(zc, z, e, PARTIAL, prm)
        elif est == SYN_SENT or est == SYN_ACK_SENT:
            if fin:
                _set_state(zc, z, e, CLOSED, prm)
                do_close = True
            if rst:
                _set_state(zc, z, e, RESET, prm)
                do_close = True
        elif est == ESTABLISHED or est == PARTIAL:
            if syn and est == PARTIAL and pst == INACTIVE and not ackf:
                _set_state(zc, z, e, SYN_SENT, prm)
            if fin and not rst:
                _set_state(zc, z, e, CLOSED, prm)
                if zc[z, pb + P_STATE] == RESET and zc[z, pb + P_PREV] == CLOSED:
                    _set_state(zc, z, 1 - e, CLOSED, prm)
                do_close = True
            if rst:
                _set_state(zc, z, e, RESET, prm)
                do_close = True
        elif est == CLOSED and rst and pst != CLOSED:    # (RST after both FINs: stays CLOSED)
            _set_state(zc, z, e, RESET, prm)
            if zc[z, b + P_DID_CLOSE] == 0:
                do_close = True
            zc[z, Z_T_RESET] = now + prm[PR_RESET_DELAY]
            zc[z, Z_TMIN] = min(zc[z, Z_TMIN], zc[z, Z_T_RESET])

        if ackf:
            # TCP_Reassembler::AckReceived on the peer's data; fast path: nothing new acked, or
            # only data already delivered.
            qb = pb
            sqa = rel_ack
            if zc[z, qb + P_FIN_CNT] > 0 and sqa >= zc[z, qb + P_FIN_SEQ]:
                sqa = zc[z, qb + P_FIN_SEQ] - 1
            if sqa > zc[z, qb + P_R_TRIM]:
                if sqa <= zc[z, qb + P_R_LAST]:
                    zc[z, qb + P_R_TRIM] = sqa
                else:
                    _ack_received(zc, z, out, out_hist, 1 - e, rel_ack)
        if ln > 0 and not rst and not underflow and not paycut:
            # DataSent; fast path: in-order data with nothing held out of order
            sqd = rel + 1 if syn else rel
            if zc[z, b + P_NBLK] == 0 and sqd <= zc[z, b + P_R_LAST] and \
                    sqd >= _sdelta(zc[z, b + P_ACKSEQ], zc[z, b + P_START]):
                zc[z, b + P_R_LAST] = max(zc[z, b + P_R_LAST], sqd + ln)
            else:
                _data_sent(zc, z, e, sqd, ln)
        if do_close:
            _connection_closed(zc, z, e, prm)
        zc[z, b + P_PKTS] += 1
        zc[z, Z_FPS] |= 1 if is_orig_param else 2
        zc[z, Z_NPK] += 1
    return len(conn_ids)


@njit(cache=True, nogil=True)
def finish_all(zc, out, out_hist, slot_live, free, st):
    """End of input: every live connection is logged with its current state."""
    for row in range(st[0]):
        z = out[row, O_LIVE]
        if z >= 0:
            _finalize(zc, z, out, out_hist, slot_live, free, st)


@njit(cache=True, nogil=True)
def sweep(zc, out, out_hist, slot_live, free, st, prm):
    """Remove every live connection a timer would have removed by the latest packet time so far
    (Zeek runs a timer as soon as any packet is at least as late), so the live table stays as
    small as the set of connections Zeek holds. Per packet, timers are checked lazily at that
    packet's own time, which is the same thing whenever the capture's clock never steps back."""
    now = st[2]
    for z in range(len(zc)):
        row = zc[z, Z_ROW]
        if row < st[0] and out[row, O_LIVE] == z and \
                (now >= zc[z, Z_TMIN] or now >= zc[z, Z_LAST_T] + zc[z, Z_INACT]) and \
                _timers_remove(zc, z, now, prm):
            _finalize(zc, z, out, out_hist, slot_live, free, st)
