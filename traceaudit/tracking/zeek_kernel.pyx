"""Compiled Zeek view: Zeek's own TCP connection table, endpoint states, ``history`` letters and
``conn_state``, segment by segment (Cython; no per-packet Python, the GIL released).

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
``cdef inline ... noexcept nogil`` helpers. The helpers take raw pointers to the rows they work
on (the connection's ``zc`` row ``Z``, its output row ``O`` and history row ``H``), taken once
per segment from the bounds-checked memoryviews, so no call touches a reference count and the
compiler need not reload a memoryview's strides after every store. Column offsets are the
constants of ``zeek_kernel.pxd``; the kernels check at entry that the arrays have at least those
columns, so the row pointers are never read past.

The constants (endpoint states, conn_state codes, SEG_*, Z_*/P_*/O_*/PR_* layouts, H_* bits) are
declared once in ``zeek_kernel.pxd``; Python reads them from this module.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, int32_t

from traceaudit.capture.tcpflags cimport ACK, FIN, RST, SYN
from traceaudit.flows.assign cimport F_CLIENT_IS_A, F_IPV, F_SLOT, F_TUNNELED, N_FIELDS

# conn_state codes (CS_*, in zeek_kernel.pxd) index into this.
CONN_STATES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH",
               "SHR", "OTH")

# Values that do not fit a C int enum: C constants (so the compiler folds them) and Python ints.
cdef extern from *:
    """
    #define ZK_M32 ((int64_t)0xFFFFFFFF)
    #define ZK_2P31 ((int64_t)0x80000000)
    #define ZK_2P32 ((int64_t)0x100000000)
    #define ZK_NEVER (((int64_t)1) << 62)
    """
    const int64_t _M32 "ZK_M32"
    const int64_t _2P31 "ZK_2P31"
    const int64_t _2P32 "ZK_2P32"
    const int64_t _NEVER "ZK_NEVER"
M32 = _M32
NEVER = _NEVER
TOO_LARGE = 1048576
cdef enum:
    _TOO_LARGE = 1048576
    CH_S = 83       # ord("S") ... of the history letters
    CH_H = 72
    CH_A = 65
    CH_D = 68
    CH_F = 70
    CH_R = 82
    CH_I = 73
    CH_Q = 81
    CH_T = 84
    CH_W = 87
    CH_C = 67
    CH_G = 71
    CH_CARET = 94   # ord("^")


cdef inline int64_t _sdelta(int64_t a, int64_t b) noexcept nogil:
    """Signed 32-bit difference a - b of two raw sequence numbers (Zeek's seq_delta)."""
    cdef int64_t d = (a - b) & _M32
    if d >= _2P31:
        d -= _2P32
    return d


cdef inline int64_t _max(int64_t a, int64_t b) noexcept nogil:
    return a if a >= b else b


cdef inline int64_t _min(int64_t a, int64_t b) noexcept nogil:
    return a if a <= b else b


cdef inline void _add(int64_t* O, uint8_t* H, int64_t ch, bint is_orig) noexcept nogil:
    cdef int64_t n = O[O_HLEN]
    if n < HMAX:
        H[n] = <uint8_t>(ch if is_orig else ch + 32)
    O[O_HLEN] = n + 1


cdef inline void _add_raw(int64_t* O, uint8_t* H, int64_t ch) noexcept nogil:
    cdef int64_t n = O[O_HLEN]
    if n < HMAX:
        H[n] = <uint8_t>ch
    O[O_HLEN] = n + 1


cdef inline bint _check(int64_t* Z, int64_t* O, uint8_t* H, int e, int64_t mask,
                        int64_t ch) noexcept nogil:
    """Connection::CheckHistory: True when already seen; else records the letter."""
    cdef int64_t m = mask if e == 0 else mask << 16
    if Z[Z_SEEN] & m:
        return True
    Z[Z_SEEN] |= m
    _add(O, H, ch, e == 0)
    return False


cdef inline void _scaled(int64_t* Z, int64_t* O, uint8_t* H, int e, int cnt,
                         int64_t ch) noexcept nogil:
    """Connection::ScaledHistoryEntry, base 10: letter at the 1st, 10th, 100th ... event."""
    cdef int b = ZE + e * NEP
    Z[b + cnt] += 1
    if Z[b + cnt] == Z[b + cnt + 1]:
        _add(O, H, ch, e == 0)
        Z[b + cnt + 1] *= 10


cdef inline bint _handshake(int64_t s) noexcept nogil:
    return s <= SYN_ACK_SENT


cdef inline void _set_state(int64_t* Z, int e, int64_t s, const int64_t* P) noexcept nogil:
    """TCP_Endpoint::SetState, with the switch to tcp_inactivity_timeout at handshake end."""
    cdef int b = ZE + e * NEP
    cdef int64_t st = Z[b + P_STATE]
    if s != st:
        if not _handshake(s) and _handshake(st) and _handshake(Z[ZE + (1 - e) * NEP + P_STATE]):
            Z[Z_INACT] = P[PR_INACT_TCP]
        Z[b + P_PREV] = st
        Z[b + P_STATE] = s


cdef void _flip(int64_t* Z, int64_t* O, uint8_t* H, bint rewrite) noexcept nogil:
    """Connection::FlipRoles (+ the adapter's): swap endpoints; '^' after the history so far,
    or (``rewrite``) the history re-read as if flipped at creation: '^' + case-swapped letters."""
    cdef Py_ssize_t k
    cdef int64_t t, f, n, s
    cdef uint8_t c
    for k in range(NEP):
        t = Z[ZE + k]
        Z[ZE + k] = Z[ZE + NEP + k]
        Z[ZE + NEP + k] = t
    Z[Z_ORIG_IS_A] ^= 1
    Z[Z_PARTIAL] = 0
    f = Z[Z_FPS]
    Z[Z_FPS] = ((f & 1) << 1) | ((f & 2) >> 1)
    if rewrite:
        n = _min(O[O_HLEN], HMAX - 1)
        for k in range(n, 0, -1):
            c = H[k - 1]
            if 65 <= c <= 90:
                c += 32
            elif 97 <= c <= 122:
                c -= 32
            H[k] = c
        H[0] = CH_CARET
        O[O_HLEN] += 1
        s = Z[Z_SEEN]
        Z[Z_SEEN] = ((s & 0xFFFF) << 16) | (s >> 16)
    else:
        _add_raw(O, H, CH_CARET)


cdef int64_t _size(const int64_t* Z, int e) noexcept nogil:
    """TCP_Endpoint::Size(): the payload bytes an endpoint sent, from sequence-number progress
    (the higher of last_seq and the peer's ack, in the 64-bit space its wrap counters give,
    minus the initial sequence number, minus the SYN and FIN octets), not a sum of payloads.
    Zeek computes it in uint64: a sequence number behind the start gives a huge count, which is
    returned here as the same 64 bits (Python reads the column as uint64)."""
    cdef int b = ZE + e * NEP
    cdef int64_t start = Z[b + P_START]
    cdef int64_t last64 = (Z[b + P_SEQ_WRAPS] << 32) + Z[b + P_LAST]
    cdef int64_t ack64 = (Z[b + P_ACK_WRAPS] << 32) + Z[b + P_ACKSEQ]
    cdef int64_t size
    if Z[b + P_PREV] == SYN_SENT and Z[b + P_STATE] == RESET and \
            Z[ZE + (1 - e) * NEP + P_STATE] == INACTIVE and \
            not (ack64 == start or ack64 == start + 1):
        return 0        # a half-open connection discovered and aborted
    size = (last64 if last64 > ack64 else ack64) - start
    if size != 0:
        size -= 1       # the SYN octet
    if Z[b + P_FIN_CNT] > 0 and size != 0:
        size -= 1       # the FIN octet
    return size


cdef int64_t _conn_state_code(const int64_t* Z, const int64_t* O,
                              const uint8_t* H) noexcept nogil:
    """``conn_state()`` of base/protocols/conn/main.zeek."""
    cdef int64_t os_ = Z[ZE + P_STATE]
    cdef int64_t rs = Z[ZE + NEP + P_STATE]
    cdef bint o_inact = os_ == INACTIVE or os_ == PARTIAL
    cdef bint r_inact = rs == INACTIVE or rs == PARTIAL
    if rs == RESET:
        if os_ == SYN_SENT or os_ == SYN_ACK_SENT or (
                os_ == RESET and _size(Z, 0) == 0 and _size(Z, 1) == 0):
            return CS_REJ
        return CS_RSTRH if o_inact else CS_RSTR
    if os_ == RESET:
        if r_inact:
            return CS_RSTOS0 if _rstos0_history(O, H) else CS_OTH
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


cdef bint _rstos0_history(const int64_t* O, const uint8_t* H) noexcept nogil:
    """History fully matches /^?S[^HAFGIQ]*R.*/."""
    cdef int64_t n = _min(O[O_HLEN], HMAX)
    cdef int64_t k = 0
    cdef uint8_t c
    if k < n and H[k] == CH_CARET:
        k += 1
    if k >= n or H[k] != CH_S:
        return False
    k += 1
    while k < n:
        c = H[k]
        if c == CH_R:
            return True
        if c == CH_H or c == CH_A or c == CH_F or c == CH_G or c == CH_I or c == CH_Q:
            return False
        k += 1
    return False


cdef inline void _set_tmin(int64_t* Z) noexcept nogil:
    cdef int64_t t = _NEVER
    cdef int64_t v
    cdef int f
    for f in range(Z_T_ATTEMPT, Z_T_DELETE + 1):     # (the six timer fields are consecutive)
        v = Z[f]
        if v >= 0 and v < t:
            t = v
    Z[Z_TMIN] = t


cdef int _timers_remove(int64_t* Z, int64_t now, const int64_t* P) except -1 nogil:
    """Would one of the connection's timers have removed it before a packet at ``now``?
    Consumes the one-shot timers that ran without removing it. (1 yes, 0 no; -1 with
    ZeroDivisionError raised for a zero tcp_session_timer.)"""
    cdef int64_t td = Z[Z_T_DELETE]
    if td >= 0 and td <= now:
        return True
    cdef int64_t os_ = Z[ZE + P_STATE]
    cdef int64_t rs = Z[ZE + NEP + P_STATE]
    cdef bint o_closed = Z[ZE + P_DID_CLOSE] == 1
    cdef bint r_closed = Z[ZE + NEP + P_DID_CLOSE] == 1
    cdef int64_t t = Z[Z_T_ATTEMPT]
    cdef int64_t last, period, last_fire
    cdef bint cond
    cdef int f
    if t >= 0 and t <= now:
        Z[Z_T_ATTEMPT] = -1
        if (os_ == SYN_SENT or os_ == SYN_ACK_SENT) and rs == INACTIVE:
            return True
    t = Z[Z_T_PARTIAL]
    if t >= 0 and t <= now:
        Z[Z_T_PARTIAL] = -1
        if os_ != INACTIVE and rs != INACTIVE and not (o_closed and r_closed) and \
                os_ != RESET and rs != RESET:
            return True
    t = Z[Z_T_RESET]
    if t >= 0 and t <= now:
        return True
    last = Z[Z_LAST_T]
    # ExpireTimer's removal condition (state is frozen until the next packet)
    cond = (o_closed or r_closed) and (
        (o_closed and r_closed) or os_ == RESET or rs == RESET or os_ == INACTIVE or
        rs == INACTIVE)
    if os_ == INACTIVE and rs == INACTIVE:
        cond = True
    period = P[PR_SESSION_TIMER]
    for f in range(Z_T_EXP1, Z_T_EXP2 + 1):          # EXP1 then EXP2
        t = Z[f]
        if t >= 0 and t <= now:
            # floor division (cdivision off: a zero period raises)
            last_fire = t + (now - t) // period * period
            if cond and last_fire > last + P[PR_LINGER]:
                return True
            Z[f] = last_fire + period
    _set_tmin(Z)
    return last + Z[Z_INACT] <= now


cdef inline bint _is_reuse(const int64_t* Z, int64_t flags, int64_t seq) noexcept nogil:
    """TCPSessionAdapter::IsReuse."""
    if not flags & SYN:
        return False
    cdef int co = 0
    if flags & ACK:
        if Z[ZE + P_STATE] != INACTIVE:
            return False
        co = 1
    cdef bint closed = Z[ZE + P_DID_CLOSE] == 1 or Z[ZE + NEP + P_DID_CLOSE] == 1
    if closed:
        return True
    cdef int cb = ZE + co * NEP
    if seq == Z[cb + P_START]:
        return False
    # a SYN answering a SYN-ACK seen first (SYN/SYN-ACK reversal) is not reuse
    return not (not flags & ACK and Z[cb + P_STATE] == SYN_ACK_SENT and
                Z[ZE + NEP + P_STATE] == INACTIVE and seq == Z[ZE + NEP + P_START])


cdef void _data_sent(int64_t* Z, int e, int64_t sq, int64_t ln) noexcept nogil:
    """The reassembler's view of new payload: contiguous delivery plus held blocks."""
    cdef int b = ZE + e * NEP
    cdef int64_t ack = _sdelta(Z[b + P_ACKSEQ], Z[b + P_START])
    cdef int64_t end, n, k, j
    if sq < ack:
        if sq + ln <= ack:
            return
        ln -= ack - sq
        sq = ack
    end = sq + ln
    if end <= Z[b + P_R_LAST]:
        return
    # insert [sq, end) keeping blocks sorted by start
    n = Z[b + P_NBLK]            # 0 <= n <= NBLK: only this function and _pop_first change it
    k = 0
    while k < n and Z[b + P_BLK + 2 * k] < sq:
        k += 1
    if k < n and Z[b + P_BLK + 2 * k] == sq:
        Z[b + P_BLK + 2 * k + 1] = _max(Z[b + P_BLK + 2 * k + 1], end)
    elif n < NBLK:
        j = n
        while j > k:
            Z[b + P_BLK + 2 * j] = Z[b + P_BLK + 2 * j - 2]
            Z[b + P_BLK + 2 * j + 1] = Z[b + P_BLK + 2 * j - 1]
            j -= 1
        Z[b + P_BLK + 2 * k] = sq
        Z[b + P_BLK + 2 * k + 1] = end
        Z[b + P_NBLK] = n + 1
    else:
        # Out of block slots (rare): merge into the neighbouring block (may hide a hole).
        j = k if k < n else n - 1
        Z[b + P_BLK + 2 * j] = _min(Z[b + P_BLK + 2 * j], sq)
        Z[b + P_BLK + 2 * j + 1] = _max(Z[b + P_BLK + 2 * j + 1], end)
    _deliver(Z, b)


cdef inline void _deliver(int64_t* Z, int b) noexcept nogil:
    while Z[b + P_NBLK] > 0 and Z[b + P_BLK] <= Z[b + P_R_LAST]:
        Z[b + P_R_LAST] = _max(Z[b + P_R_LAST], Z[b + P_BLK + 1])
        _pop_first(Z, b)


cdef inline void _pop_first(int64_t* Z, int b) noexcept nogil:
    cdef int64_t n = Z[b + P_NBLK]
    cdef int64_t j
    for j in range(1, n):
        Z[b + P_BLK + 2 * j - 2] = Z[b + P_BLK + 2 * j]
        Z[b + P_BLK + 2 * j - 1] = Z[b + P_BLK + 2 * j + 1]
    Z[b + P_NBLK] = n - 1


cdef inline bint _clean(const int64_t* Z, int e) noexcept nogil:
    cdef int b = ZE + e * NEP
    cdef int64_t st = Z[b + P_STATE]
    return st == ESTABLISHED or (st == CLOSED and Z[b + P_PREV] == ESTABLISHED)


cdef void _ack_received(int64_t* Z, int64_t* O, uint8_t* H, int e, int64_t sq) noexcept nogil:
    """TCP_Reassembler::AckReceived for endpoint e's data: acked sequence space that never
    arrived is a content gap. Each gap (before a held block, or up to the ack) is one
    ``Gap()``: while both endpoints are 'clean' it counts for a scaled G/g and its length goes
    to missed_bytes (the ``content_gap`` event the conn script adds up)."""
    cdef int b = ZE + e * NEP
    cdef int64_t fs, gaps, missed, k
    if Z[b + P_FIN_CNT] > 0:
        fs = Z[b + P_FIN_SEQ]
        if sq >= fs:
            sq = fs - 1
    if sq <= Z[b + P_R_TRIM]:
        return
    Z[b + P_R_TRIM] = sq
    if sq <= Z[b + P_R_LAST]:
        return
    if sq <= 2 and Z[Z_PARTIAL] == 1:
        return
    gaps = 0
    missed = 0
    while Z[b + P_NBLK] > 0 and Z[b + P_BLK] < sq:
        if Z[b + P_BLK] > Z[b + P_R_LAST]:
            gaps += 1
            missed += Z[b + P_BLK] - Z[b + P_R_LAST]
        Z[b + P_R_LAST] = _max(Z[b + P_R_LAST], Z[b + P_BLK + 1])
        _pop_first(Z, b)
    if sq > Z[b + P_R_LAST]:
        gaps += 1
        missed += sq - Z[b + P_R_LAST]
        Z[b + P_R_LAST] = sq
    if gaps and _clean(Z, e) and _clean(Z, 1 - e):
        O[O_MISSED] += missed
        for k in range(gaps):
            _scaled(Z, O, H, e, P_CNT_G, CH_G)


cdef void _connection_closed(int64_t* Z, int e, const int64_t* P) noexcept nogil:
    """TCPSessionAdapter::ConnectionClosed: did_close and the removal timers it arms."""
    cdef int b = ZE + e * NEP
    cdef int pb = ZE + (1 - e) * NEP
    cdef int64_t last
    if Z[b + P_DID_CLOSE] == 1:
        return
    Z[b + P_DID_CLOSE] = 1
    last = Z[Z_LAST_T]
    if Z[b + P_STATE] == RESET or Z[pb + P_DID_CLOSE] == 1 or Z[pb + P_STATE] == INACTIVE:
        # CancelTimers
        Z[Z_T_ATTEMPT] = -1
        Z[Z_T_EXP1] = -1
        Z[Z_T_EXP2] = -1
        Z[Z_T_PARTIAL] = -1
        Z[Z_T_RESET] = -1
        Z[Z_T_DELETE] = last + P[PR_CLOSE_DELAY]
    elif Z[b + P_PREV] == INACTIVE:
        Z[Z_T_PARTIAL] = last + P[PR_PARTIAL_CLOSE]
    else:
        Z[Z_T_EXP2] = last + P[PR_SESSION_TIMER]
    _set_tmin(Z)


cdef void _established_event(int64_t* Z, uint16_t sport, uint16_t dport, int e,
                             const uint8_t* likely, const uint8_t* long_ports,
                             const int64_t* P) noexcept nogil:
    """base/protocols/conn/inactivity.zeek: connection_established → port_inactivity_timeouts.
    (``likely`` / ``long_ports`` have 65536 entries: a port always indexes them.)"""
    cdef uint16_t rp, op, svc
    if e == 1:
        rp, op = sport, dport
    else:
        rp, op = dport, sport
    svc = rp
    if Z[ZE + P_STATE] == INACTIVE and not likely[rp] and likely[op]:
        svc = op
    if long_ports[svc]:
        Z[Z_INACT] = P[PR_INACT_LONG]


cdef inline void _finalize(int64_t* Z, int64_t z, int64_t[:, ::1] out, const uint8_t[:, ::1] out_hist,
                           int64_t[::1] slot_live, int64_t[::1] free,
                           int64_t* S) noexcept nogil:
    """Remove live connection z (its row ``Z``): its conn_state and counts go to its output
    row. ``S`` = st."""
    cdef int64_t row = Z[Z_ROW]
    cdef int64_t* O = &out[row, 0]
    O[O_STATE] = _conn_state_code(Z, O, &out_hist[row, 0])
    O[O_ORIG_PKTS] = Z[ZE + P_PKTS]
    O[O_RESP_PKTS] = Z[ZE + NEP + P_PKTS]
    O[O_ORIG_IP_BYTES] = Z[ZE + P_IP_BYTES]
    O[O_RESP_IP_BYTES] = Z[ZE + NEP + P_IP_BYTES]
    O[O_ORIG_SIZE] = _size(Z, 0)
    O[O_RESP_SIZE] = _size(Z, 1)
    O[O_LAST_T] = Z[Z_LAST_T]
    O[O_ORIG_IS_A] = Z[Z_ORIG_IS_A]
    O[O_LIVE] = -1
    if slot_live[Z[Z_SLOT]] == z:
        slot_live[Z[Z_SLOT]] = -1
    free[S[1]] = z
    S[1] += 1


cdef void _new_conn(int64_t* Z, int64_t z, int64_t* O, uint8_t* H, int64_t row, int64_t s,
                    int64_t orig_is_a, bint flipped, int64_t now, int64_t frame, int64_t ipv,
                    int64_t tunneled, int64_t conn, const int64_t* P) noexcept nogil:
    cdef Py_ssize_t k
    cdef int e, b
    for k in range(NZ):
        Z[k] = 0
    Z[Z_ROW] = row
    Z[Z_SLOT] = s
    Z[Z_ORIG_IS_A] = orig_is_a
    Z[Z_LAST_T] = now
    Z[Z_INACT] = P[PR_INACT_INIT]
    Z[Z_T_ATTEMPT] = -1
    Z[Z_T_EXP1] = now + P[PR_SYN_TIMEOUT]
    Z[Z_T_EXP2] = -1
    Z[Z_T_PARTIAL] = -1
    Z[Z_T_RESET] = -1
    Z[Z_T_DELETE] = -1
    Z[Z_TMIN] = Z[Z_T_EXP1]
    for e in range(2):
        b = ZE + e * NEP
        Z[b + P_THR_C] = 1
        Z[b + P_THR_T] = 1
        Z[b + P_THR_W] = 1
        Z[b + P_THR_G] = 1
        Z[b + P_R_LAST] = 1
    for k in range(NO):
        O[k] = 0
    O[O_SLOT] = s
    O[O_ORIG_IS_A] = orig_is_a
    O[O_IPV] = ipv
    O[O_STATE] = -1
    O[O_START_TS] = now
    O[O_FIRST_FRAME] = frame
    O[O_LAST_FRAME] = frame
    O[O_LIVE] = z
    O[O_TUNNELED] = tunneled
    O[O_CONN] = conn
    if flipped:
        _add_raw(O, H, CH_CARET)


cdef int _check_tables(int64_t[:, ::1] zc, int64_t[:, ::1] out, uint8_t[:, ::1] out_hist,
                       int64_t[::1] free, int64_t[::1] st, const int64_t[::1] prm) except -1:
    """The row pointers of the helpers are only safe on arrays with all the columns."""
    if zc.shape[1] < NZ or out.shape[1] < NO or out_hist.shape[1] < HMAX or \
            out_hist.shape[0] < out.shape[0] or free.shape[0] < zc.shape[0] or \
            st.shape[0] < 3 or (prm is not None and prm.shape[0] < N_PRM):
        raise ValueError("Zeek view tables have the wrong shape")
    if st[0] < 0 or st[0] > out.shape[0] or st[1] < 0 or st[1] > zc.shape[0]:
        raise ValueError("Zeek view counters out of range")
    return 0


def zeek_batch(const int64_t[::1] conn_ids, const uint8_t[::1] from_client,
               const uint16_t[::1] sport, const uint16_t[::1] dport, const uint16_t[::1] flags,
               const uint32_t[::1] seq, const uint32_t[::1] ack, const int32_t[::1] plen,
               const int32_t[::1] ip_len, const uint16_t[::1] win, const int64_t[::1] ts, const int64_t[::1] frame,
               const uint8_t[::1] seg_flags, bint use_seg_flags, const int64_t[:, ::1] fl_conn,
               int64_t[::1] slot_live, int64_t[::1] our_zrow, int64_t[:, ::1] zc,
               int64_t[::1] free, int64_t[:, ::1] out, uint8_t[:, ::1] out_hist,
               int64_t[::1] st, const uint8_t[::1] likely, const uint8_t[::1] long_ports,
               const int64_t[::1] prm, Py_ssize_t start):
    """Run rows ``start``.. of a batch through the Zeek view. Returns the next row: it stops
    early, before a row, when the live table or the output rows are full (caller grows them).

    ``ip_len`` is the batch column (IP total length, for orig/resp_ip_bytes).
    ``st`` = [output rows used, free live rows, latest packet time]; ``likely`` /
    ``long_ports`` are bool[65536]; ``from_client`` is bool (read as bytes)."""
    cdef Py_ssize_t n = conn_ids.shape[0]
    _check_tables(zc, out, out_hist, free, st, prm)
    if from_client.shape[0] < n or sport.shape[0] < n or dport.shape[0] < n or \
            flags.shape[0] < n or seq.shape[0] < n or ack.shape[0] < n or plen.shape[0] < n or \
            ip_len.shape[0] < n or win.shape[0] < n or ts.shape[0] < n or frame.shape[0] < n or \
            (use_seg_flags and seg_flags.shape[0] < n) or start < 0:
        raise ValueError("batch columns shorter than the batch")
    if likely.shape[0] < 65536 or long_ports.shape[0] < 65536 or fl_conn.shape[1] < N_FIELDS:
        raise ValueError("port masks need 65536 entries, the flow table all its fields")
    cdef const int64_t* P = &prm[0]
    cdef const uint8_t* LK = &likely[0]
    cdef const uint8_t* LP = &long_ports[0]
    cdef int64_t* S = &st[0]
    cdef int64_t out_rows = out.shape[0]
    cdef bint ignore_csum = P[PR_IGNORE_CSUM] == 1
    cdef Py_ssize_t i
    cdef Py_ssize_t result = n
    cdef int64_t c, s, z, row, now, f, sq, ln, ak, wn, sp, dp, est, pst, seg, end, rel
    cdef int64_t rel_ack, a1, da, last, dl, qb, sqa, sqd, code, fps, bits, ipl
    cdef uint8_t sf
    cdef uint16_t sp0, dp0
    cdef int e, b, pb
    cdef bint src_is_a, flip, orig_is_a, paycut, is_orig_param, syn, fin, rst, ackf, reinit
    cdef bint underflow, do_close
    cdef int64_t* Z
    cdef int64_t* O
    cdef uint8_t* H
    with nogil:
        for i in range(start, n):
            if S[1] < 1 or S[0] >= out_rows:
                result = i
                break
            sf = seg_flags[i] if use_seg_flags else 0
            if sf & SEG_BAD_IP_CSUM and not ignore_csum:
                continue
            c = conn_ids[i]
            s = fl_conn[c, F_SLOT]
            src_is_a = (from_client[i] != 0) == (fl_conn[c, F_CLIENT_IS_A] == 1)
            now = ts[i]
            S[2] = _max(S[2], now)
            f = flags[i]
            sq = seq[i]
            z = slot_live[s]
            if z >= 0:
                Z = &zc[z, 0]
                if (now >= Z[Z_TMIN] or now >= Z[Z_LAST_T] + Z[Z_INACT]) and \
                        _timers_remove(Z, now, P):
                    _finalize(Z, z, out, out_hist, slot_live, free, S)
                    z = -1
            if z >= 0 and f & SYN and _is_reuse(Z, f, sq):
                _finalize(Z, z, out, out_hist, slot_live, free, S)
                z = -1
            if z < 0:
                S[1] -= 1
                z = free[S[1]]
                row = S[0]
                S[0] += 1
                flip = False
                if (f & (SYN | ACK)) != SYN:         # WantConnection: partial or SYN-ACK start
                    sp0 = sport[i]
                    dp0 = dport[i]
                    if LK[sp0]:
                        if LK[dp0]:
                            flip = (f & SYN) == 0 and sp0 < dp0
                        else:
                            flip = True
                orig_is_a = (not src_is_a) if flip else src_is_a
                Z = &zc[z, 0]
                _new_conn(Z, z, &out[row, 0], &out_hist[row, 0], row, s, 1 if orig_is_a else 0,
                          flip, now, frame[i], fl_conn[c, F_IPV], fl_conn[c, F_TUNNELED], c, P)
                slot_live[s] = z
            row = Z[Z_ROW]
            O = &out[row, 0]
            H = &out_hist[row, 0]
            O[O_LAST_FRAME] = frame[i]
            our_zrow[c] = row
            e = 0 if src_is_a == (Z[Z_ORIG_IS_A] == 1) else 1
            if sf & SEG_HEADER_CUT:
                continue
            if sf & SEG_BAD_CSUM and not ignore_csum:
                _scaled(Z, O, H, e, P_CNT_C, CH_C)
                continue
            ln = plen[i]
            ipl = ip_len[i]
            # A connection that began with an unflipped SYN-ACK is flipped by the next ACK or
            # data segment (Zeek >= 5.1); its history then reads as if flipped at creation ('^h').
            if Z[Z_FIRST_SYNACK] == 1 and O[O_HLEN] == 1 and H[0] == CH_H \
                    and Z[ZE + P_STATE] == SYN_ACK_SENT and Z[ZE + NEP + P_STATE] == INACTIVE \
                    and (f & (SYN | RST)) == 0 and ((f & ACK) != 0 or ln > 0):
                _flip(Z, O, H, True)
                _set_state(Z, 1, ESTABLISHED, P)
                e = 1 - e
            if Z[Z_NPK] == 0 and (f & (SYN | ACK)) == (SYN | ACK) and e == 0:
                Z[Z_FIRST_SYNACK] = 1
            ak = ack[i]
            wn = win[i]
            sp = sport[i]
            dp = dport[i]
            paycut = (sf & SEG_PAYLOAD_CUT) != 0
            # ---- TCPSessionAdapter::Process for this segment, sent by endpoint e (0 orig) ----
            is_orig_param = e == 0
            syn = (f & SYN) != 0
            fin = (f & FIN) != 0
            rst = (f & RST) != 0
            ackf = (f & ACK) != 0
            # SetPartialStatus
            fps = Z[Z_FPS]
            if e == 0:
                if not fps & 1:
                    Z[Z_PARTIAL] = 1 if (not syn or ackf) else 0
            elif not fps & 2 and Z[Z_PARTIAL] == 0:
                Z[Z_PARTIAL] = 0 if syn else 1

            b = ZE + e * NEP
            pb = ZE + (1 - e) * NEP
            seg = ln + (1 if syn else 0) + (1 if fin else 0) - (ln if rst else 0)
            end = (sq + seg) & _M32
            est = Z[b + P_STATE]
            # init_endpoint
            reinit = False
            if est == INACTIVE:
                if syn:
                    Z[b + P_START] = sq
                    Z[b + P_ACKSEQ] = sq
                    Z[b + P_LAST] = end
                else:
                    Z[b + P_START] = (sq - 1) & _M32
                    Z[b + P_ACKSEQ] = (sq - 1) & _M32
                    Z[b + P_LAST] = sq
            elif est == SYN_SENT or est == SYN_ACK_SENT:
                reinit = syn and sq != Z[b + P_START]
            elif est == ESTABLISHED or est == PARTIAL:
                reinit = syn
            elif est == RESET:
                reinit = syn and Z[b + P_PREV] == INACTIVE
            if reinit:
                Z[b + P_START] = sq
                Z[b + P_ACKSEQ] = sq
                Z[b + P_LAST] = end
            rel = _sdelta(sq, Z[b + P_START])
            underflow = rel < 0

            # update_history
            bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
            if bits > 1:
                if fin and rst:
                    _check(Z, O, H, e, H_FIN_RST, CH_I)
                else:
                    _check(Z, O, H, e, H_MULTI, CH_Q)
            elif bits == 1:
                if syn:
                    code = CH_H if ackf else CH_S
                    if _check(Z, O, H, e, H_SYN, code) and rel != Z[b + P_HL_SYN]:
                        _add(O, H, code, e == 0)
                    Z[b + P_HL_SYN] = rel
                if fin:
                    if _check(Z, O, H, e, H_FIN, CH_F) and rel + ln != Z[b + P_HL_FIN]:
                        _add(O, H, CH_F, e == 0)
                    Z[b + P_HL_FIN] = rel + ln
                if rst:
                    if _check(Z, O, H, e, H_RST, CH_R) and rel != Z[b + P_HL_RST]:
                        _add(O, H, CH_R, e == 0)
                    Z[b + P_HL_RST] = rel
            elif ln > 0:
                # seen-bit test here, so the common case makes no call (see the module docstring)
                if not Z[Z_SEEN] & (<int64_t>H_DATA << (16 * e)):
                    _check(Z, O, H, e, H_DATA, CH_D)
            elif ackf and not Z[Z_SEEN] & (<int64_t>H_ACK << (16 * e)):
                _check(Z, O, H, e, H_ACK, CH_A)

            # update_window: zero windows (scaling never turns a non-zero window into zero)
            if wn == 0 and not rst and Z[pb + P_STATE] != CLOSED and est != RESET:
                _scaled(Z, O, H, e, P_CNT_W, CH_W)

            if not (Z[ZE + P_DID_CLOSE] == 1 and Z[ZE + NEP + P_DID_CLOSE] == 1):
                Z[Z_LAST_T] = now
            if fin:
                Z[b + P_FIN_CNT] += 1
                Z[b + P_FIN_SEQ] = rel + seg
            if rst:
                Z[b + P_RST_CNT] += 1

            rel_ack = 0
            if ackf:
                if Z[pb + P_STATE] == INACTIVE:
                    rel_ack = 1
                    a1 = (ak - 1) & _M32                 # init_peer
                    Z[pb + P_START] = a1
                    Z[pb + P_ACKSEQ] = a1
                    Z[pb + P_LAST] = a1
                else:
                    rel_ack = _sdelta(ak, Z[pb + P_START])
                    if rel_ack < 0:
                        rel_ack = 0
                    elif not rst:                        # update_ack_seq
                        da = _sdelta(ak, Z[pb + P_ACKSEQ])
                        if not (ak == 0 and da > _TOO_LARGE) and da > 0:
                            if ak < Z[pb + P_ACKSEQ]:         # UpdateAckSeq: a wrap
                                Z[pb + P_ACK_WRAPS] += 1
                            Z[pb + P_ACKSEQ] = ak

            # update_last_seq (retransmissions)
            last = Z[b + P_LAST]
            dl = _sdelta(end, last)
            if (syn or rst) and (dl > _TOO_LARGE or dl < -_TOO_LARGE):
                pass
            elif fin and last == ((Z[b + P_START] + 1) & _M32):
                if end < last:                          # UpdateLastSeq: a wrap
                    Z[b + P_SEQ_WRAPS] += 1
                Z[b + P_LAST] = end
            elif est == RESET:
                pass
            elif dl > 0:
                if end < last:
                    Z[b + P_SEQ_WRAPS] += 1
                Z[b + P_LAST] = end
            elif ln > 0:
                _scaled(Z, O, H, e, P_CNT_T, CH_T)

            # UpdateStateMachine
            do_close = False
            pst = Z[pb + P_STATE]
            if est == INACTIVE:
                if syn:
                    if e == 0:
                        _set_state(Z, e, SYN_ACK_SENT if ackf else SYN_SENT, P)
                        Z[Z_T_ATTEMPT] = now + P[PR_ATTEMPT]
                        Z[Z_TMIN] = _min(Z[Z_TMIN], Z[Z_T_ATTEMPT])
                    else:
                        if not ackf and pst == SYN_ACK_SENT and sq == Z[b + P_START]:
                            # SYN/SYN-ACK reversal: the SYN sender becomes the originator.
                            _flip(Z, O, H, False)
                            e = 0
                            b, pb = pb, b
                            _set_state(Z, 1, ESTABLISHED, P)
                            Z[Z_FPS] |= 1
                        if Z[pb + P_STATE] == SYN_SENT:
                            _set_state(Z, 1 - e, ESTABLISHED, P)
                        _set_state(Z, e, ESTABLISHED, P)
                        if Z[pb + P_STATE] != PARTIAL and P[PR_INACT_LONG] > 0:
                            _established_event(Z, <uint16_t>sp, <uint16_t>dp, e, LK, LP, P)
                if fin:
                    _set_state(Z, e, CLOSED, P)
                    do_close = True
                if rst:
                    _set_state(Z, e, RESET, P)
                    do_close = True
                if Z[b + P_STATE] == INACTIVE:
                    if not is_orig_param and ln == 0 and Z[ZE + P_STATE] == SYN_SENT:
                        pass                             # an eccentric ACK of the SYN
                    elif ackf and Z[pb + P_STATE] == ESTABLISHED:
                        _set_state(Z, e, ESTABLISHED, P)
                        Z[Z_PARTIAL] = 0
                        Z[Z_FPS] |= 1 if is_orig_param else 2
                    else:
                        _set_state(Z, e, PARTIAL, P)
            elif est == SYN_SENT or est == SYN_ACK_SENT:
                if fin:
                    _set_state(Z, e, CLOSED, P)
                    do_close = True
                if rst:
                    _set_state(Z, e, RESET, P)
                    do_close = True
            elif est == ESTABLISHED or est == PARTIAL:
                if syn and est == PARTIAL and pst == INACTIVE and not ackf:
                    _set_state(Z, e, SYN_SENT, P)
                if fin and not rst:
                    _set_state(Z, e, CLOSED, P)
                    if Z[pb + P_STATE] == RESET and Z[pb + P_PREV] == CLOSED:
                        _set_state(Z, 1 - e, CLOSED, P)
                    do_close = True
                if rst:
                    _set_state(Z, e, RESET, P)
                    do_close = True
            elif est == CLOSED and rst and pst != CLOSED:    # (RST after both FINs: stays CLOSED)
                _set_state(Z, e, RESET, P)
                if Z[b + P_DID_CLOSE] == 0:
                    do_close = True
                Z[Z_T_RESET] = now + P[PR_RESET_DELAY]
                Z[Z_TMIN] = _min(Z[Z_TMIN], Z[Z_T_RESET])

            if ackf:
                # TCP_Reassembler::AckReceived on the peer's data; fast path: nothing new acked,
                # or only data already delivered.
                qb = pb
                sqa = rel_ack
                if Z[qb + P_FIN_CNT] > 0 and sqa >= Z[qb + P_FIN_SEQ]:
                    sqa = Z[qb + P_FIN_SEQ] - 1
                if sqa > Z[qb + P_R_TRIM]:
                    if sqa <= Z[qb + P_R_LAST]:
                        Z[qb + P_R_TRIM] = sqa
                    else:
                        _ack_received(Z, O, H, 1 - e, rel_ack)
            if ln > 0 and not rst and not underflow and not paycut:
                # DataSent; fast path: in-order data with nothing held out of order
                sqd = rel + 1 if syn else rel
                if Z[b + P_NBLK] == 0 and sqd <= Z[b + P_R_LAST] and \
                        sqd >= _sdelta(Z[b + P_ACKSEQ], Z[b + P_START]):
                    Z[b + P_R_LAST] = _max(Z[b + P_R_LAST], sqd + ln)
                else:
                    _data_sent(Z, e, sqd, ln)
            if do_close:
                _connection_closed(Z, e, P)
            Z[b + P_PKTS] += 1
            Z[b + P_IP_BYTES] += ipl
            Z[Z_FPS] |= 1 if is_orig_param else 2
            Z[Z_NPK] += 1
    return result


def finish_all(int64_t[:, ::1] zc, int64_t[:, ::1] out, uint8_t[:, ::1] out_hist,
               int64_t[::1] slot_live, int64_t[::1] free, int64_t[::1] st):
    """End of input: every live connection is logged with its current state."""
    _check_tables(zc, out, out_hist, free, st, None)
    cdef int64_t* S = &st[0]
    cdef int64_t row, z
    with nogil:
        for row in range(S[0]):
            z = out[row, O_LIVE]
            if z >= 0:
                _finalize(&zc[z, 0], z, out, out_hist, slot_live, free, S)


def sweep(int64_t[:, ::1] zc, int64_t[:, ::1] out, uint8_t[:, ::1] out_hist,
          int64_t[::1] slot_live, int64_t[::1] free, int64_t[::1] st, const int64_t[::1] prm):
    """Remove every live connection a timer would have removed by the latest packet time so far
    (Zeek runs a timer as soon as any packet is at least as late), so the live table stays as
    small as the set of connections Zeek holds. Per packet, timers are checked lazily at that
    packet's own time, which is the same thing whenever the capture's clock never steps back."""
    _check_tables(zc, out, out_hist, free, st, prm)
    cdef const int64_t* P = &prm[0]
    cdef int64_t* S = &st[0]
    cdef int64_t now = S[2]
    cdef int64_t row
    cdef Py_ssize_t z
    cdef int64_t* Z
    with nogil:
        for z in range(zc.shape[0]):
            Z = &zc[z, 0]
            row = Z[Z_ROW]
            # (0 <= row: a free row's stale Z_ROW is never negative; checked all the same)
            if 0 <= row < S[0] and out[row, O_LIVE] == z and \
                    (now >= Z[Z_TMIN] or now >= Z[Z_LAST_T] + Z[Z_INACT]) and \
                    _timers_remove(Z, now, P):
                _finalize(Z, z, out, out_hist, slot_live, free, S)
