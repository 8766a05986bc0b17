"""Compiled endpoint trackers: both endpoints' RFC 9293 states, segment by segment.

Vantage point: a transition caused by a segment an endpoint SENDS is placed at that frame; one
caused by a segment it RECEIVES is placed at the same frame too, i.e. the segment is assumed to
arrive when the capture saw it. For a capture taken next to one host the other host's receive
transitions really happen one path delay later. Evidence that a segment did not arrive (the
peer retransmits it) corrects the state at the retransmission. Corrections that need hindsight
(TIME_WAIT skipped, FIN_WAIT_2 expired, FINs that crossed, the ACK of a SYN-ACK lost) are
flagged here and applied to the timeline afterwards (``timeline.py``). Timers the capture
cannot show are run when the connection's next segment (or the capture's end) proves them
expired: TIME_WAIT's 2×MSL, and a half-open server's SYN-ACK retransmissions running out.
A connection id whose 4-tuple comes back long after the connection went quiet starts a new
incarnation (``_comes_back``).

RST origin: every endpoint's first RST is judged sent by the endpoint or forged on the path
(``_rst_evidence``, ``_judge_rst``), from how it differs from the endpoint's own non-RST
segments at this vantage point and from what the endpoint sends after it (the race).
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memset

from traceaudit.capture.tcpflags cimport ACK, FIN, RST, SYN
from traceaudit.tracking.facts cimport ConnFacts, EndpointFacts
from traceaudit.tracking.states cimport (CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, FIN_WAIT_1,
                                         FIN_WAIT_2, LAST_ACK, LISTEN, SYN_RECEIVED, SYN_SENT,
                                         TIME_WAIT, UNSEEN, Answered, Closer, Confidence,
                                         Hindsight, Reason, RstEvidence, RstOrigin)

# The facts are the structs of facts.pxd (Python reads them through traceaudit.tracking.facts);
# states, reasons and bit sets the enums of states.pxd; EV_HEADROOM is in kernel.pxd. HALF and
# FULL do not fit a C int:
cdef extern from *:
    """
    static const int64_t traceaudit_kernel_HALF = (int64_t)1 << 31;
    static const int64_t traceaudit_kernel_FULL = (int64_t)1 << 32;
    """
    const int64_t HALF "traceaudit_kernel_HALF"
    const int64_t FULL "traceaudit_kernel_FULL"

cdef enum:
    _NO_BACKOFF_NS = 200000000        # SYN-ACKs closer than this tell no retransmission timer
    _IP_ID_STEP = 256                 # a sequential IPv4 ID rises by at most this much between
                                      # two segments seen (segments lost before the capture)
    _SEQ_PLAUSIBLE = 1 << 30          # an RST further than this from snd_nxt is not "in window"
    _RACE_NS = 1000000000             # the race: the endpoint's own segments within 1 s of a
                                      # reset (what was in flight; later ones may be another
                                      # program on the host, e.g. a scanner's own stack)
cdef extern from *:
    """
    static const int64_t traceaudit_kernel_RTO_MAX = (int64_t)120 * 1000000000;
    static const int64_t traceaudit_kernel_NEVER = INT64_MAX;
    """
    const int64_t RTO_MAX "traceaudit_kernel_RTO_MAX"   # Linux TCP_RTO_MAX: the longest backoff
    const int64_t NEVER "traceaudit_kernel_NEVER"


ctypedef int64_t[:, ::1] Matrix
ctypedef EndpointFacts[:, ::1] Ends
ctypedef ConnFacts[::1] Conns


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


cdef int64_t _set(EndpointFacts* ep, Matrix ev, int64_t n_ev, Py_ssize_t c, Py_ssize_t e,
                  int64_t ts, int64_t frame, int64_t state, int64_t reason) noexcept nogil:
    """Move endpoint ``ep`` (endpoint e of connection c) to ``state`` (no-op when already
    there)."""
    if ep.state == state:
        return n_ev
    ep.state = state
    ep.state_since_ns = ts
    if state == TIME_WAIT:
        ep.tw_since_ns = ts
        ep.tw_frame = frame
    elif state == FIN_WAIT_2:
        ep.fw2_since_ns = ts
        ep.fw2_frame = frame
    elif state == CLOSE_WAIT:
        ep.cw_since_ns = ts
        ep.cw_frame = frame
    return _emit(ev, n_ev, c, e, ts, frame, state, reason)


cdef inline void init_conn(Ends ends, Conns conns, Py_ssize_t c, int64_t prev) noexcept nogil:
    cdef Py_ssize_t e
    cdef EndpointFacts* ep
    cdef ConnFacts* conn = &conns[c]
    memset(&ends[c, 0], 0, 2 * sizeof(EndpointFacts))
    memset(conn, 0, sizeof(ConnFacts))
    for e in range(2):
        ep = &ends[c, e]
        ep.state = UNSEEN
        ep.rst_frame = -1
        ep.rst_answers_frame = -1
        ep.rst_from_state = UNSEEN
        ep.fin_frame = -1
        ep.fin_acked_frame = -1
        ep.got_fin_frame = -1
        ep.tw_frame = -1
        ep.last_data_frame = -1
        ep.last_frame = -1
        ep.fin_retx_frame = -1
        ep.cw_frame = -1
        ep.fw2_frame = -1
        ep.syn_last_frame = -1
        ep.first_frame = -1
        ep.ttl_lo = 256
        ep.ttl_hi = -1
        ep.tsval_last = -1
        ep.ip_id_last = -1
        ep.rst_ttl = -1
        ep.rst_ip_id = -1
        ep.rst_tsval = -1
        ep.rst_idle_ns = -1
        ep.race_frame = -1
    conn.closer = Closer.NONE
    conn.close_frame = -1
    conn.tw_recycled_frame = -1
    conn.prev = prev
    conn.incarnation_frame = -1
    conn.initialised = 1


cdef inline bint _comes_back(EndpointFacts* me, EndpointFacts* peer, int64_t t, int64_t f,
                             int64_t msl2) noexcept nogil:
    """True when a segment at ``t`` with flags ``f`` from ``me`` begins a new incarnation of
    its connection: the connection went quiet 2×MSL before (every segment of it is gone from
    the network, and any TIME_WAIT of it ended), and either both endpoints had closed or the
    segment is a SYN (a connection that had opened does not send one again; one still opening
    retransmits its SYN sooner: Linux's longest SYN backoff is 32 s). Only a connection id that
    Wireshark keeps one ``tcp.stream`` for (same 4-tuple, same ISN: a capture merged with a
    replay of itself) gets here."""
    if t - msl2 < me.last_ns or t - msl2 < peer.last_ns:
        return False
    if (f & (SYN | ACK)) == SYN:
        return True
    return (me.state == CLOSED or me.state == UNSEEN) and \
        (peer.state == CLOSED or peer.state == UNSEEN)


cdef int64_t _new_incarnation(Ends ends, Conns conns, Matrix ev, int64_t n_ev, Py_ssize_t c,
                              int64_t t, int64_t frame) noexcept nogil:
    """End connection c's incarnation at this frame (both endpoints CLOSED, reason
    NEW_INCARNATION) and start the next with fresh facts; how the connection id began (its
    previous 4-tuple incarnation) is kept."""
    cdef Py_ssize_t e
    cdef ConnFacts* conn = &conns[c]
    cdef int64_t prev = conn.prev, prev_tw = conn.prev_in_time_wait
    cdef int64_t recycled = conn.tw_recycled_frame, number = conn.incarnation + 1
    for e in range(2):
        if ends[c, e].state != UNSEEN:
            n_ev = _emit(ev, n_ev, c, e, t, frame, CLOSED, Reason.NEW_INCARNATION)
    init_conn(ends, conns, c, prev)
    conn.prev_in_time_wait = prev_tw
    conn.tw_recycled_frame = recycled
    conn.incarnation = number
    conn.incarnation_frame = frame
    conn.incarnation_ns = t
    return n_ev


cdef inline int64_t _gives_up_at(const EndpointFacts* ep) noexcept nogil:
    """When an endpoint in SYN_RECEIVED that sent its SYN-ACK more than once drops the
    half-open connection, unless another SYN-ACK comes first: its last retransmission plus the
    backoff doubled (Linux: the request socket's timer doubles from 1 s, at most TCP_RTO_MAX,
    and after tcp_synack_retries retransmissions it expires once more and drops it, without a
    packet). NEVER when the last two SYN-ACKs tell no backoff."""
    cdef int64_t d = ep.syn_last_ns - ep.syn_prev_ns
    if ep.syn_count < 2 or d < _NO_BACKOFF_NS:
        return NEVER
    return ep.syn_last_ns + (2 * d if 2 * d < RTO_MAX else RTO_MAX)


cdef inline int64_t _expire_time_wait(Ends ends, Matrix ev, int64_t n_ev, Py_ssize_t c,
                                      int64_t now, int64_t msl2) noexcept nogil:
    """The timers the capture cannot show: close endpoints whose TIME_WAIT has lasted 2×MSL
    by ``now``, and half-open ones (SYN_RECEIVED) silent when their next SYN-ACK was due
    (``_gives_up_at``; half the last backoff later, for timer slack: a SYN-ACK by then means
    it had not given up). A peer that sent more than one SYN (simultaneous open, or SYN
    retransmissions that each get a SYN-ACK) tells no timer."""
    # (this module calls this copy: it runs for every segment, and the C compiler inlines it
    # where the exported ``expire_time_wait`` below must take its memoryviews whole)
    cdef Py_ssize_t e
    cdef int64_t t
    cdef EndpointFacts* ep
    for e in range(2):
        ep = &ends[c, e]
        if ep.state == TIME_WAIT:
            if now >= ep.tw_since_ns + msl2:
                t = ep.tw_since_ns + msl2
                n_ev = _set(ep, ev, n_ev, c, e, t, -1, CLOSED, Reason.TIME_WAIT_EXPIRED)
        elif ep.state == SYN_RECEIVED and ep.syn_count >= 2 and ends[c, 1 - e].syn_count <= 1:
            t = _gives_up_at(ep)
            if t != NEVER and now >= t + (ep.syn_last_ns - ep.syn_prev_ns) // 2:
                ep.gave_up_ns = t
                n_ev = _set(ep, ev, n_ev, c, e, t, -1, CLOSED, Reason.SYN_ACK_GAVE_UP)
    return n_ev


cdef int64_t expire_time_wait(Ends ends, Matrix ev, int64_t n_ev, Py_ssize_t c, int64_t now,
                              int64_t msl2) noexcept nogil:
    """Close endpoints whose TIME_WAIT has lasted 2×MSL by ``now``, and half-open ones
    whose SYN-ACK retransmissions ran out (for other compiled modules: declared in
    kernel.pxd)."""
    return _expire_time_wait(ends, ev, n_ev, c, now, msl2)


cdef inline void _close_role(ConnFacts* conn, int64_t x, int64_t ts,
                             int64_t frame) noexcept nogil:
    if conn.closer < 0:
        conn.closer = x
        conn.close_frame = frame
        conn.close_ns = ts


cdef inline void _note_identity(EndpointFacts* me, int64_t ttl, int64_t ip_id, bint has_ts,
                                int64_t tsval) noexcept nogil:
    """What a non-RST segment of ``me`` carries that its RST is compared with: the TTL range,
    timestamps, and whether its nonzero IPv4 IDs rise in sequence (Linux: a per-socket
    counter for DF segments, 0 for those sent without a socket)."""
    if ttl < me.ttl_lo:
        me.ttl_lo = ttl
    if ttl > me.ttl_hi:
        me.ttl_hi = ttl
    if has_ts:
        me.tsval_last = tsval
    else:
        me.ts_missing += 1
    if ip_id > 0:
        if me.ip_id_last > 0:
            if 1 <= ((ip_id - me.ip_id_last) & 0xFFFF) <= _IP_ID_STEP:
                me.ip_id_steps += 1
            else:
                me.ip_id_jumps += 1
        me.ip_id_last = ip_id


cdef inline int64_t _rst_evidence(const EndpointFacts* me, int64_t ttl, int64_t ip_id,
                                  bint has_ts, int64_t tsval, int64_t seq_gap) noexcept nogil:
    """RstEvidence bits of an RST carrying ``me``'s address, against ``me``'s non-RST segments
    before it (none: nothing to compare, no bit)."""
    cdef int64_t bits = 0
    if me.ttl_hi < 0:
        return 0
    if ttl < me.ttl_lo or ttl > me.ttl_hi:
        bits |= RstEvidence.TTL
    # a socket's IDs rise by one a segment; an ID of 0 is what Linux writes without a socket
    if ip_id > 0 and me.ip_id_last > 0 and me.ip_id_steps >= 4 and \
            8 * me.ip_id_jumps <= me.ip_id_steps and \
            not (1 <= ((ip_id - me.ip_id_last) & 0xFFFF) <= _IP_ID_STEP):
        bits |= RstEvidence.IP_ID
    if not has_ts and me.ts_missing == 0:
        bits |= RstEvidence.NO_TIMESTAMPS
    if has_ts and me.tsval_last >= 0 and ((tsval - me.tsval_last) & (FULL - 1)) >= HALF:
        bits |= RstEvidence.TSVAL
    if seq_gap != 0 and -_SEQ_PLAUSIBLE < seq_gap < _SEQ_PLAUSIBLE:
        bits |= RstEvidence.SEQ
    return bits


cdef inline void _judge_rst(EndpointFacts* me) noexcept nogil:
    """The verdict on ``me``'s first RST from its evidence, conservatively: the path on strong
    evidence (TTL, the race); on weak evidence only when the RST carries timestamps (a reset
    a socket sent: its IP ID, TSval and sequence number are then the socket's own) and two
    of those are out of line. An endpoint's kernel resets without a socket too (after
    TIME_WAIT, for an orphan that timed out, for an unknown 4-tuple): no timestamps, an ID from
    another counter (0 on Linux now, a global or random one elsewhere), the peer's ACK as its
    sequence number; those signs alone never make a path reset."""
    cdef int64_t bits = me.rst_evidence, n = 0, b
    if me.rst_tsval >= 0:
        b = bits & (RstEvidence.IP_ID | RstEvidence.TSVAL | RstEvidence.SEQ)
        while b:
            n += b & 1
            b >>= 1
    if bits & (RstEvidence.TTL | RstEvidence.RACE) or n >= 2:
        me.rst_origin = RstOrigin.PATH
        me.rst_confidence = Confidence.HIGH if \
            (bits & RstEvidence.TTL and bits & RstEvidence.RACE) or \
            (bits & (RstEvidence.TTL | RstEvidence.RACE) and
             bits & ~(RstEvidence.TTL | RstEvidence.RACE)) else Confidence.MEDIUM
    else:
        me.rst_origin = RstOrigin.ENDPOINT
        if me.ttl_hi < 0:
            me.rst_confidence = Confidence.LOW
        elif bits:
            me.rst_confidence = Confidence.MEDIUM
        else:
            me.rst_confidence = Confidence.HIGH


cdef int _check_tables(Ends ends, Conns conns, Matrix ev) except -1:
    if ends.shape[1] != 2 or conns.shape[0] != ends.shape[0] or ev.shape[1] < 6:
        raise ValueError("tracker tables: (n, 2) endpoint facts, (n,) connection facts and an "
                         "(n, 6) int64 event matrix expected")
    return 0


def track_batch(const int64_t[::1] conn_ids, const uint8_t[::1] from_client,
                const uint16_t[::1] flags, const uint32_t[::1] seq, const uint32_t[::1] ack,
                const int32_t[::1] plen, const uint16_t[::1] win, const uint8_t[::1] app,
                const uint8_t[::1] ttl, const int32_t[::1] ip_id, const uint8_t[::1] has_ts,
                const uint32_t[::1] tsval, const int64_t[::1] ts,
                const int64_t[::1] frame, const int64_t[:] prev_of, Ends ends, Conns conns,
                Matrix ev, int64_t n_ev, int64_t msl2, int64_t fin_timeout, Py_ssize_t start):
    """Run both trackers over rows ``start``.. of a batch (capture order).

    ``ends[c, 0]``, ``ends[c, 1]``, ``conns[c]``: connection c's client, server and connection
    facts (facts.pxd), initialised at its first segment.
    ``prev_of[c]`` is the previous incarnation of connection c's 4-tuple (-1 when none).
    ``msl2`` and ``fin_timeout`` (ns): TIME_WAIT length and the orphaned FIN_WAIT_2 lifetime.
    ``ev`` receives (conn, endpoint, ts_ns, frame, state, reason) rows from ``n_ev`` on. Returns
    (event count, next row): it stops early, before a row, when ``ev`` has fewer than
    EV_HEADROOM free rows, so that the caller can drain it and call again.
    ``app`` is the batch's ``app_marks`` column (HTTP/1.x requests / responses a segment
    starts), counted into ``http_requests_in`` / ``http_responses_out`` for segments whose
    payload begins at or past the sender's highest sequence number so far (new data, not a
    retransmission or a keepalive).
    ``ttl``, ``ip_id``, ``has_ts``, ``tsval``: the batch's columns, for the origin of RSTs
    (the endpoint's own segments are what an RST is compared with).
    (``from_client`` and ``has_ts`` are bool arrays; ``prev_of`` may be a strided column,
    e.g. of flows.conn.)
    """
    cdef Py_ssize_t rows = conn_ids.shape[0]
    if not (from_client.shape[0] == rows and flags.shape[0] == rows and seq.shape[0] == rows
            and ack.shape[0] == rows and plen.shape[0] == rows and win.shape[0] == rows
            and app.shape[0] == rows and ttl.shape[0] == rows and ip_id.shape[0] == rows
            and has_ts.shape[0] == rows and tsval.shape[0] == rows
            and ts.shape[0] == rows and frame.shape[0] == rows and start >= 0
            and 0 <= n_ev <= ev.shape[0]):
        raise ValueError("track_batch: columns of different lengths")
    _check_tables(ends, conns, ev)
    cdef Py_ssize_t i, c, e, x, y, p
    cdef EndpointFacts* me          # the sender of the segment
    cdef EndpointFacts* peer        # its receiver
    cdef EndpointFacts* old
    cdef ConnFacts* conn
    cdef Py_ssize_t stop = rows
    cdef int64_t t, fr, f, n, s, end, a, ref, sx, sy, lf, pf, kind, sprev, fseq
    cdef int64_t tt, run
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
            me = &ends[c, x]
            peer = &ends[c, y]
            conn = &conns[c]
            if conn.initialised == 0:
                p = prev_of[c]
                init_conn(ends, conns, c, p)
                if p >= 0:
                    n_ev = _expire_time_wait(ends, ev, n_ev, p, t, msl2)
                    for e in range(2):
                        old = &ends[p, e]
                        if old.state == TIME_WAIT:
                            conn.prev_in_time_wait = 1
                            conns[p].tw_recycled_frame = fr
                            n_ev = _set(old, ev, n_ev, p, e, t, fr, CLOSED,
                                        Reason.TIME_WAIT_RECYCLED)
            else:
                n_ev = _expire_time_wait(ends, ev, n_ev, c, t, msl2)
                if _comes_back(me, peer, t, f, msl2):
                    n_ev = _new_incarnation(ends, conns, ev, n_ev, c, t, fr)
            n = plen[i]
            syn = (f & SYN) != 0
            fin = (f & FIN) != 0
            rst = (f & RST) != 0
            has_ack = (f & ACK) != 0
            # -- sequence spaces ------------------------------------------------------------
            if me.seq_base_set == 0:
                me.seq_base_set = 1
                me.seq_base = seq[i]
                me.snd_nxt = 0
            s = _unwrap(me.seq_base, me.snd_nxt, seq[i])
            end = s + n + (1 if syn else 0) + (1 if fin else 0)
            a = 0
            if has_ack:
                if peer.seq_base_set == 0:
                    # the peer has sent nothing yet: its ISN is taken as ack - 1 (as Wireshark does)
                    peer.seq_base_set = 1
                    peer.seq_base = (<int64_t>ack[i] - 1) & (FULL - 1)
                    peer.snd_nxt = 1
                ref = peer.snd_nxt
                if me.ack_set == 1 and me.rcv_nxt > ref:
                    ref = me.rcv_nxt
                a = _unwrap(peer.seq_base, ref, ack[i])
            # -- first sight of the sender: handshake or mid-stream ------------------------
            sx = me.state
            if sx == UNSEEN and not syn and not rst:
                if peer.state == UNSEEN:
                    conn.midstream = 1
                    n_ev = _set(peer, ev, n_ev, c, y, t, fr, ESTABLISHED, Reason.MIDSTREAM)
                n_ev = _set(me, ev, n_ev, c, x, t, fr, ESTABLISHED, Reason.MIDSTREAM)
            if syn and not rst:
                me.syn_count += 1
                me.syn_last_frame = fr
                me.syn_prev_ns = me.syn_last_ns
                me.syn_last_ns = t
                if me.isn_seen == 0:
                    me.isn_seen = 1
                    me.seq_base = seq[i]
                    s = 0
                    end = 1 + n + (1 if fin else 0)
                    me.snd_nxt = 0
                if not has_ack:
                    if sx == UNSEEN or sx == CLOSED:
                        n_ev = _set(me, ev, n_ev, c, x, t, fr, SYN_SENT, Reason.SENT_SYN)
                    if peer.state == SYN_SENT:
                        n_ev = _set(peer, ev, n_ev, c, y, t, fr, SYN_RECEIVED, Reason.RECEIVED_SYN)
                else:
                    conn.synack_seen = 1
                    if sx == UNSEEN or sx == SYN_SENT or sx == LISTEN:
                        n_ev = _set(me, ev, n_ev, c, x, t, fr, SYN_RECEIVED, Reason.SENT_SYN_ACK)
                    elif sx == ESTABLISHED and me.syn_count > 1 and conn.midstream == 0 and \
                            (me.last_flags & (SYN | ACK | FIN | RST)) == (SYN | ACK):
                        # a SYN-ACK again, after the peer's ACK of the last one: that ACK never
                        # arrived (a live connection answers a SYN with an ACK, not a SYN-ACK);
                        # the peer's later ACKs are not taken as arriving either until this
                        # side sends something else (timeline.py drops the ESTABLISHED)
                        me.hindsight |= Hindsight.SYN_ACK_AGAIN
                        n_ev = _set(me, ev, n_ev, c, x, t, fr, SYN_RECEIVED,
                                    Reason.ACK_OF_SYN_LOST)
                    if peer.state == UNSEEN:
                        n_ev = _set(peer, ev, n_ev, c, y, t, fr, SYN_SENT, Reason.MIDSTREAM)
                    sy = peer.state
                    if (sy == SYN_SENT or sy == SYN_RECEIVED) and a >= 1:
                        n_ev = _set(peer, ev, n_ev, c, y, t, fr, ESTABLISHED,
                                    Reason.RECEIVED_SYN_ACK)
            # -- idle runs: the longest quiet time before or within each endpoint's turn ----
            # (the states are checked when a run is answered, not at every segment: a run that
            # began in the handshake is answered by a segment of an endpoint not yet
            # ESTABLISHED; one an RST answers is judged by the rules from rst_from_state)
            run = -1
            if peer.last_frame > me.last_frame:
                # this segment begins a run of ``me``'s after the peer's: the peer's run was
                # answered, with an RST or not
                run = conn.run_idle_ns
                if not rst and run > conn.idle_survived_ns and me.state == ESTABLISHED and \
                        peer.state == ESTABLISHED:
                    conn.idle_survived_ns = run
                conn.run_idle_ns = t - peer.last_ns
            elif t - me.last_ns > conn.run_idle_ns and me.last_frame >= 0:
                # ``me`` goes on after a pause: e.g. its ACK, then nothing, then a request
                conn.run_idle_ns = t - me.last_ns
            # -- what it carries that an RST of its address is compared with ---------------
            tt = ttl[i]
            if not rst:
                if me.rst_count > 0 and not syn and t - me.rst_ns <= _RACE_NS and \
                        me.ttl_lo <= tt <= me.ttl_hi and \
                        (end > me.rst_seq or (has_ack and me.ack_set == 1 and a > me.rcv_nxt)):
                    # its own segment, with its usual TTL and numbers past the reset: the
                    # endpoint had not reset the connection
                    me.race_segs += 1
                    if me.race_frame < 0:
                        me.race_frame = fr
                        me.rst_evidence |= RstEvidence.RACE
                        _judge_rst(me)
                _note_identity(me, tt, ip_id[i], has_ts[i] != 0, tsval[i])
            # -- what this segment answers (for RST analysis) -------------------------------
            if rst:
                if me.state == SYN_RECEIVED and not has_ack and peer.syn_count <= 1 and \
                        t >= _gives_up_at(me):
                    # a bare RST after its next SYN-ACK was due: the half-open connection had
                    # gone, and the host answered as it does for an unknown 4-tuple
                    me.gave_up_ns = _gives_up_at(me)
                    n_ev = _set(me, ev, n_ev, c, x, me.gave_up_ns, -1, CLOSED,
                                Reason.SYN_ACK_GAVE_UP)
                me.rst_count += 1
                if me.rst_count == 1:
                    me.rst_frame = fr
                    me.rst_ns = t
                    me.rst_from_state = me.state
                    me.rst_flags = f
                    me.rst_ttl = tt
                    me.rst_ip_id = ip_id[i]
                    me.rst_tsval = tsval[i] if has_ts[i] else -1
                    me.rst_seq = s
                    me.rst_seq_gap = s - me.snd_nxt
                    if run > 0:
                        me.rst_idle_ns = run
                    me.rst_evidence = _rst_evidence(me, tt, ip_id[i], has_ts[i] != 0, tsval[i],
                                                    me.rst_seq_gap)
                    _judge_rst(me)
                    lf = peer.last_frame
                    # It answers the peer's latest segment when that came after our own last one
                    # and the RST's numbers fit it (bare RST: seq = its ack; RST|ACK: acks its end).
                    if lf >= 0 and lf > me.last_frame:
                        pf = peer.last_flags
                        fits = (not has_ack and (pf & ACK) != 0 and
                                <int64_t>seq[i] == peer.last_ack_raw) or \
                            (has_ack and a == peer.last_seq_end) or \
                            (not has_ack and (pf & ACK) == 0 and <int64_t>seq[i] == 0)
                        if fits:
                            kind = 0
                            if peer.last_seq_end > 0 and (pf & FIN) != 0:
                                kind |= Answered.FIN
                                if peer.fin_count > 1:
                                    kind |= Answered.FIN_AGAIN
                            if (pf & SYN) != 0:
                                kind |= Answered.SYN
                            if peer.last_data_frame == lf:
                                kind |= Answered.DATA
                            me.rst_answers_frame = lf
                            me.rst_answers_kind = kind
                    sprev = me.state
                    if not has_ack and me.rst_answers_frame >= 0:
                        # A bare RST answering a segment comes from a host with no socket.
                        if sprev == TIME_WAIT and me.data_after_fin > 0:
                            # data after its close reset the socket (Linux answers such data with
                            # RST): it never reached TIME_WAIT, the FIN came to a closed port
                            me.hindsight |= Hindsight.TW_NEVER
                        elif sprev == TIME_WAIT:
                            me.hindsight |= Hindsight.TW_SKIPPED
                        elif sprev == FIN_WAIT_2 and t - me.fw2_since_ns >= fin_timeout:
                            # the orphan had outlived tcp_fin_timeout: freed, then a closed port
                            # answered (earlier, a live socket answers data after close)
                            me.hindsight |= Hindsight.FW2_EXPIRED
                _close_role(conn, x, t, fr)
                if me.state != CLOSED:
                    n_ev = _set(me, ev, n_ev, c, x, t, fr, CLOSED, Reason.SENT_RST)
                sy = peer.state
                accept = False
                if sy == SYN_SENT:
                    accept = has_ack and a == 1
                    if accept and conn.synack_seen == 0:
                        conn.refused = 1
                elif sy != UNSEEN and sy != CLOSED:
                    accept = peer.ack_set == 0 or s >= peer.rcv_nxt - 1
                if accept:
                    conn.rst_accepted = 1
                    n_ev = _set(peer, ev, n_ev, c, y, t, fr, CLOSED, Reason.RECEIVED_RST)
            else:
                if me.state == SYN_RECEIVED and not syn and me.hindsight & Hindsight.SYN_ACK_AGAIN:
                    # after ACKs that never arrived, its own segment shows one did
                    n_ev = _set(me, ev, n_ev, c, x, t, fr, ESTABLISHED,
                                Reason.RECEIVED_ACK_OF_SYN)
                # -- ACK: acknowledges the peer's SYN or FIN --------------------------------
                if has_ack:
                    if me.ack_set == 0 or a > me.rcv_nxt:
                        me.rcv_nxt = a
                    me.ack_set = 1
                    sy = peer.state
                    if sy == SYN_RECEIVED and a >= 1 and not syn and \
                            (peer.hindsight & Hindsight.SYN_ACK_AGAIN) == 0:
                        n_ev = _set(peer, ev, n_ev, c, y, t, fr, ESTABLISHED,
                                    Reason.RECEIVED_ACK_OF_SYN)
                    if peer.fin_sent == 1 and peer.fin_acked == 0 and a >= peer.fin_seq + 1:
                        peer.fin_acked = 1
                        peer.fin_acked_frame = fr
                        sy = peer.state
                        if sy == FIN_WAIT_1:
                            if fin and peer.got_fin == 0:
                                pass                    # FIN|ACK: straight to TIME_WAIT below
                            else:
                                n_ev = _set(peer, ev, n_ev, c, y, t, fr, FIN_WAIT_2,
                                            Reason.FIN_ACKNOWLEDGED)
                        elif sy == CLOSING:
                            n_ev = _set(peer, ev, n_ev, c, y, t, fr, TIME_WAIT,
                                        Reason.FIN_ACKNOWLEDGED)
                        elif sy == LAST_ACK:
                            n_ev = _set(peer, ev, n_ev, c, y, t, fr, CLOSED,
                                        Reason.FIN_ACKNOWLEDGED)
                # -- data ------------------------------------------------------------------
                if n > 0:
                    me.data_pkts += 1
                    me.last_data_frame = fr
                    me.last_data_ns = t
                    if peer.fin_sent == 1:
                        peer.data_after_fin += 1
                if n <= 1 and not syn and not fin and has_ack and me.seen == 1 and \
                        s == me.snd_nxt - 1:
                    # keepalive probe: one byte below snd_nxt, carrying nothing new
                    me.keepalives += 1
                    if me.fin_sent == 1 or peer.fin_sent == 1:
                        me.keepalives_half_closed += 1
                if win[i] == 0 and not syn:
                    me.zero_windows += 1
                # -- FIN -------------------------------------------------------------------
                if fin:
                    fseq = s + n
                    if me.fin_sent == 0:
                        me.fin_sent = 1
                        me.fin_seq = fseq
                        me.fin_frame = fr
                        me.fin_ns = t
                        me.fin_count = 1
                        if conn.closer < 0:
                            _close_role(conn, x, t, fr)
                        elif conn.closer == y and peer.fin_sent == 1 and \
                                (not has_ack or a < peer.fin_seq + 1):
                            # our FIN does not acknowledge the peer's: the two FINs crossed
                            conn.closer = Closer.SIMULTANEOUS
                            me.hindsight |= Hindsight.FINS_CROSSED
                        sx = me.state
                        if sx == SYN_SENT:          # the SYN-ACK is missing from the capture
                            n_ev = _set(me, ev, n_ev, c, x, t, fr, ESTABLISHED, Reason.MIDSTREAM)
                            sx = ESTABLISHED
                        if me.hindsight & Hindsight.FINS_CROSSED:
                            if sx == ESTABLISHED or sx == SYN_RECEIVED or sx == CLOSE_WAIT:
                                n_ev = _set(me, ev, n_ev, c, x, t, fr, CLOSING, Reason.SENT_FIN)
                        elif sx == CLOSE_WAIT:
                            n_ev = _set(me, ev, n_ev, c, x, t, fr, LAST_ACK, Reason.SENT_FIN)
                        elif sx == ESTABLISHED or sx == SYN_RECEIVED:
                            n_ev = _set(me, ev, n_ev, c, x, t, fr, FIN_WAIT_1, Reason.SENT_FIN)
                    elif fseq == me.fin_seq:
                        me.fin_count += 1
                        if me.fin_retx_frame < 0:
                            me.fin_retx_frame = fr
                        sx = me.state
                        if sx == CLOSED and me.got_fin == 1 and me.rst_count == 0:
                            # we took its FIN as acknowledged, but the ACK never reached it; the
                            # timeline drops that CLOSED (see timeline.py)
                            me.fin_acked = 0
                            me.hindsight |= Hindsight.FIN_ACK_LOST
                            n_ev = _set(me, ev, n_ev, c, x, t, fr, LAST_ACK, Reason.ACK_LOST)
                    # the peer receives it
                    if peer.got_fin == 0:
                        peer.got_fin = 1
                        peer.got_fin_frame = fr
                        sy = peer.state
                        if sy == ESTABLISHED or sy == SYN_RECEIVED:
                            n_ev = _set(peer, ev, n_ev, c, y, t, fr, CLOSE_WAIT,
                                        Reason.RECEIVED_FIN)
                        elif sy == FIN_WAIT_1:
                            if peer.fin_acked == 1:
                                n_ev = _set(peer, ev, n_ev, c, y, t, fr, TIME_WAIT,
                                            Reason.RECEIVED_FIN)
                            else:
                                n_ev = _set(peer, ev, n_ev, c, y, t, fr, CLOSING,
                                            Reason.RECEIVED_FIN)
                        elif sy == FIN_WAIT_2:
                            n_ev = _set(peer, ev, n_ev, c, y, t, fr, TIME_WAIT,
                                        Reason.RECEIVED_FIN)
                        elif sy == CLOSING and peer.fin_acked == 1:
                            n_ev = _set(peer, ev, n_ev, c, y, t, fr, TIME_WAIT,
                                        Reason.RECEIVED_FIN)
            # -- bookkeeping -------------------------------------------------------------------
            if not rst and me.state == TIME_WAIT and peer.last_frame > me.tw_frame:
                # answering a later segment (e.g. a retransmitted FIN) restarts the 60 s, as on
                # Linux
                me.tw_since_ns = t
            if not rst and n > 0 and app[i] != 0 and s >= me.snd_nxt:
                # HTTP/1.x message starts in new data (a segment that begins past everything
                # sent so far; a SYN's data starts one past the ISN), counted until the endpoint
                # that would answer or read them has reset
                if me.rst_count == 0:
                    me.http_responses_out += app[i] >> 4
                if peer.rst_count == 0:
                    peer.http_requests_in += app[i] & 0x0F
            if not rst and end > me.snd_nxt:
                me.snd_nxt = end
            if me.seen == 0:
                me.seen = 1
                me.first_frame = fr
                me.first_ns = t
            me.last_frame = fr
            me.last_ns = t
            me.last_flags = f
            me.last_ack_raw = ack[i]
            me.last_seq_end = end
    return n_ev, stop


def finish(Ends ends, Conns conns, Matrix ev, int64_t n_ev, Py_ssize_t n_conns,
           int64_t end_ts, int64_t msl2):
    """At capture end: expire TIME_WAITs whose 2×MSL passed before the capture ended."""
    _check_tables(ends, conns, ev)
    if not (0 <= n_conns <= ends.shape[0] and 0 <= n_ev and n_ev + 2 * n_conns <= ev.shape[0]):
        raise ValueError("finish: too few rows for the connections or their events")
    cdef Py_ssize_t c
    with nogil:
        for c in range(n_conns):
            if conns[c].initialised == 1:
                n_ev = _expire_time_wait(ends, ev, n_ev, c, end_ts, msl2)
    return n_ev
