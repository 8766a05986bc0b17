"""Compiled connection assignment: each segment → (connection id, direction), with per-direction
counters, across batches.

A 4-tuple ("slot") is looked up in an open-addressing hash table; each slot points at its current
connection ("incarnation"). A new incarnation starts on port reuse, with the rule Wireshark uses
for ``tcp.stream`` so that connection ids equal Wireshark's stream numbers (see ``reuses_slot``).
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from traceaudit.capture.tcpflags cimport ACK, SYN

# F_*, S_*, N_FIELDS, N_SLOT_FIELDS (the conn and slots layouts), GOLDEN and the hashing helpers
# _mix, _slot_hash, canonical are declared in assign.pxd.


ctypedef int64_t[:, ::1] Matrix


cdef inline bint server_port_guess(int64_t sport, int64_t dport) noexcept nogil:
    """Which side is the server when no SYN says so: True when the destination is.

    Documented heuristic: a port below 1024 against one above is the server; else a port outside
    Linux's ephemeral range (32768–60999) against one inside it; else the lower port; equal ports:
    the destination of the first packet seen.
    """
    if (dport < 1024) != (sport < 1024):
        return dport < 1024
    cdef bint d_eph = dport >= 32768 and dport <= 60999
    cdef bint s_eph = sport >= 32768 and sport <= 60999
    if d_eph != s_eph:
        return s_eph
    if dport != sport:
        return dport < sport
    return True


cdef inline bint reuses_slot(Matrix conn, Py_ssize_t c, int64_t flags, int64_t seq,
                             Py_ssize_t d) noexcept nogil:
    """True when this segment starts a new incarnation of connection ``c``'s 4-tuple.

    Wireshark's ``tcp.stream`` rule: a pure SYN (SYN set, ACK clear) whose sequence number
    differs from the base sequence number already known for its own direction. Nothing else
    splits: not a SYN with the same ISN, not a SYN-ACK, not FIN/RST, not time.
    """
    if (flags & (SYN | ACK)) != SYN:
        return False
    return conn[c, F_BASE_SET + d] == 1 and conn[c, F_BASE + d] != seq


cdef inline void _note_base(Matrix conn, Py_ssize_t c, Py_ssize_t d, int64_t flags, int64_t seq,
                            int64_t ack) noexcept nogil:
    """Wireshark's base_seq bookkeeping for both directions of connection c."""
    if conn[c, F_BASE_SET + d] == 0:
        conn[c, F_BASE_SET + d] = 1
        conn[c, F_BASE + d] = seq if flags & SYN else (seq - 1) & <int64_t>0xFFFFFFFF
    elif (flags & (SYN | ACK)) == (SYN | ACK) and conn[c, F_BASE + d] != seq:
        conn[c, F_BASE + d] = seq             # a SYN-ACK with a new ISN re-bases its flow
    if flags & ACK and conn[c, F_BASE_SET + 1 - d] == 0:
        conn[c, F_BASE_SET + 1 - d] = 1
        conn[c, F_BASE + 1 - d] = (ack - 1) & <int64_t>0xFFFFFFFF


cdef inline uint64_t _row_hash(const int64_t[:, :] slots, Py_ssize_t s) noexcept nogil:
    return _slot_hash(<uint64_t>slots[s, S_A_HI], <uint64_t>slots[s, S_A_LO], slots[s, S_A_PORT],
                      <uint64_t>slots[s, S_B_HI], <uint64_t>slots[s, S_B_LO], slots[s, S_B_PORT])


def rebuild_table(int64_t[::1] ht, const int64_t[:, :] slots, Py_ssize_t n_slots):
    """Insert slots 0..n_slots-1 into the empty table ``ht`` (after it was enlarged)."""
    # (``slots`` may be any int64 matrix of slot-shaped rows: the flow builder's, or a TupleSet's)
    if not (0 <= n_slots <= slots.shape[0] and n_slots < ht.shape[0]
            and slots.shape[1] >= N_SLOT_FIELDS and ht.shape[0] & (ht.shape[0] - 1) == 0):
        raise ValueError("rebuild_table: table too small for the slots, or not a power of two")
    cdef uint64_t mask = <uint64_t>(ht.shape[0] - 1)
    cdef uint64_t i
    cdef Py_ssize_t s
    with nogil:
        for s in range(n_slots):
            i = _row_hash(slots, s) & mask
            while ht[i] >= 0:
                i = (i + 1) & mask
            ht[i] = s


cdef inline Py_ssize_t _lookup(int64_t[::1] ht, Matrix slots, Py_ssize_t n_slots,
                               const Tuple4 *t) noexcept nogil:
    """Slot index for the 4-tuple, inserting it when new (as slot ``n_slots``)."""
    cdef uint64_t mask = <uint64_t>(ht.shape[0] - 1)
    cdef uint64_t i = _slot_hash(t.a_hi, t.a_lo, t.a_port, t.b_hi, t.b_lo, t.b_port) & mask
    cdef Py_ssize_t s
    while True:
        s = ht[i]
        if s < 0:
            s = n_slots
            ht[i] = s
            slots[s, S_A_HI] = <int64_t>t.a_hi
            slots[s, S_A_LO] = <int64_t>t.a_lo
            slots[s, S_B_HI] = <int64_t>t.b_hi
            slots[s, S_B_LO] = <int64_t>t.b_lo
            slots[s, S_A_PORT] = t.a_port
            slots[s, S_B_PORT] = t.b_port
            slots[s, S_CONN] = -1
            return s
        if slots[s, S_A_LO] == <int64_t>t.a_lo and slots[s, S_B_LO] == <int64_t>t.b_lo and \
                slots[s, S_A_PORT] == t.a_port and slots[s, S_B_PORT] == t.b_port and \
                slots[s, S_A_HI] == <int64_t>t.a_hi and slots[s, S_B_HI] == <int64_t>t.b_hi:
            return s
        i = (i + 1) & mask


cdef inline Py_ssize_t _new_conn(Matrix conn, Py_ssize_t n_conns, Py_ssize_t s, bint src_is_a,
                                 int64_t flags, int64_t sport, int64_t dport, int64_t ipv,
                                 int64_t tunneled) noexcept nogil:
    cdef Py_ssize_t c = n_conns, j, d
    cdef bint from_client
    for j in range(conn.shape[1]):
        conn[c, j] = 0
    if (flags & (SYN | ACK)) == SYN:
        from_client = True
    elif (flags & (SYN | ACK)) == (SYN | ACK):
        from_client = False
    else:
        from_client = server_port_guess(sport, dport)
        conn[c, F_GUESSED] = 1
    conn[c, F_CLIENT_IS_A] = 1 if src_is_a == from_client else 0
    conn[c, F_SLOT] = s
    conn[c, F_PREV] = -1
    conn[c, F_IPV] = ipv
    conn[c, F_TUNNELED] = tunneled
    for d in range(2):
        conn[c, F_DIR_FIRST_TS + d] = -1
        conn[c, F_DIR_FIRST_FRAME + d] = -1
    return c


def assign_batch(const uint64_t[::1] src_hi, const uint64_t[::1] src_lo,
                 const uint64_t[::1] dst_hi, const uint64_t[::1] dst_lo,
                 const uint16_t[::1] sport, const uint16_t[::1] dport,
                 const uint16_t[::1] flags, const uint32_t[::1] seq, const uint32_t[::1] ack,
                 const int64_t[::1] ts, const int64_t[::1] frame, const int32_t[::1] frame_len,
                 const int32_t[::1] payload_len, const uint8_t[::1] ipv,
                 const uint8_t[::1] tunneled, int64_t[::1] ht, Matrix slots, int64_t n_slots,
                 Matrix conn, int64_t n_conns, int64_t[::1] out_conn,
                 uint8_t[::1] out_from_client, Py_ssize_t start):
    """Assign rows ``start``.. of a batch. Returns (n_slots, n_conns, next row).

    Stops early, before a row, when a new slot or connection might not fit (``slots`` or
    ``conn`` full, or ``ht`` half full), so that the caller can grow them and call again.
    (``tunneled`` and ``out_from_client`` are bool arrays.)
    """
    cdef Py_ssize_t n = src_hi.shape[0]
    if not (src_lo.shape[0] == n and dst_hi.shape[0] == n and dst_lo.shape[0] == n
            and sport.shape[0] == n and dport.shape[0] == n and flags.shape[0] == n
            and seq.shape[0] == n and ack.shape[0] == n and ts.shape[0] == n
            and frame.shape[0] == n and frame_len.shape[0] == n and payload_len.shape[0] == n
            and ipv.shape[0] == n and tunneled.shape[0] == n and out_conn.shape[0] == n
            and out_from_client.shape[0] == n):
        raise ValueError("assign_batch: columns of different lengths")
    if not (slots.shape[1] >= N_SLOT_FIELDS and conn.shape[1] >= N_FIELDS and start >= 0
            and 0 <= n_slots <= slots.shape[0] and 0 <= n_conns <= conn.shape[0]
            and ht.shape[0] > 0 and ht.shape[0] & (ht.shape[0] - 1) == 0):
        raise ValueError("assign_batch: bad table shapes or counts")
    cdef Py_ssize_t i, s, c, prev, d
    cdef int64_t f, sq, t
    cdef bint from_client
    cdef Tuple4 k
    # the previous segment's 4-tuple and slot: about half the segments of a capture follow one
    # of the same connection, and skip the hash and the table probe
    cdef Py_ssize_t last_s = -1
    cdef Tuple4 last
    last.a_hi = last.a_lo = last.b_hi = last.b_lo = 0
    last.a_port = last.b_port = -1
    cdef Py_ssize_t stop = n
    with nogil:
        for i in range(start, n):
            if n_conns >= conn.shape[0] or n_slots >= slots.shape[0] or \
                    2 * (n_slots + 1) > ht.shape[0]:
                stop = i
                break
            k = canonical(src_hi[i], src_lo[i], sport[i], dst_hi[i], dst_lo[i], dport[i])
            if last_s >= 0 and k.a_lo == last.a_lo and k.b_lo == last.b_lo and \
                    k.a_port == last.a_port and k.b_port == last.b_port and \
                    k.a_hi == last.a_hi and k.b_hi == last.b_hi:
                s = last_s
            else:
                s = _lookup(ht, slots, n_slots, &k)
                if s == n_slots:
                    n_slots += 1
                last_s = s
                last = k
            f = flags[i]
            sq = seq[i]
            c = slots[s, S_CONN]
            if c >= 0:
                from_client = (conn[c, F_CLIENT_IS_A] == 1) == k.src_is_a
                if reuses_slot(conn, c, f, sq, 0 if from_client else 1):
                    c = -1
            if c < 0:
                prev = slots[s, S_CONN]
                c = _new_conn(conn, n_conns, s, k.src_is_a, f, sport[i], dport[i], ipv[i],
                              tunneled[i])
                conn[c, F_PREV] = prev
                n_conns += 1
                slots[s, S_CONN] = c
                conn[c, F_FIRST_TS] = ts[i]
                conn[c, F_FIRST_FRAME] = frame[i]
            from_client = (conn[c, F_CLIENT_IS_A] == 1) == k.src_is_a
            d = 0 if from_client else 1
            _note_base(conn, c, d, f, sq, ack[i])
            t = ts[i]
            if t > conn[c, F_LAST_TS]:
                conn[c, F_LAST_TS] = t
            conn[c, F_LAST_FRAME] = frame[i]
            conn[c, F_PKTS + d] += 1
            conn[c, F_BYTES + d] += frame_len[i]
            conn[c, F_PAYLOAD + d] += payload_len[i]
            if conn[c, F_DIR_FIRST_FRAME + d] < 0:
                conn[c, F_DIR_FIRST_FRAME + d] = frame[i]
                conn[c, F_DIR_FIRST_TS + d] = t
            conn[c, F_DIR_LAST_FRAME + d] = frame[i]
            if t > conn[c, F_DIR_LAST_TS + d]:
                conn[c, F_DIR_LAST_TS + d] = t
            out_conn[i] = c
            out_from_client[i] = from_client
    return n_slots, n_conns, stop


cdef inline Py_ssize_t _share_of(const Tuple4 *t, uint64_t of) noexcept nogil:
    # the hash's high 32 bits, scaled to 0..of-1 (the flow table indexes its hash table with
    # the low bits: a share keeps a uniform spread of them)
    cdef uint64_t h = _slot_hash(t.a_hi, t.a_lo, t.a_port, t.b_hi, t.b_lo, t.b_port)
    return <Py_ssize_t>(((h >> 32) * of) >> 32)


def share_rows(const uint64_t[::1] src_hi, const uint64_t[::1] src_lo,
               const uint64_t[::1] dst_hi, const uint64_t[::1] dst_lo,
               const uint16_t[::1] sport, const uint16_t[::1] dport,
               Py_ssize_t share, Py_ssize_t of, uint8_t[::1] out):
    """Mark (``out[i] = 1``) the rows whose canonical 4-tuple, the key of the flow table's
    slots, falls into ``share`` of ``of`` shares; returns how many. Both directions of a
    4-tuple, and so every incarnation of it, land in the same share (``parallel.shares``)."""
    cdef Py_ssize_t n = src_hi.shape[0]
    if not (src_lo.shape[0] == n and dst_hi.shape[0] == n and dst_lo.shape[0] == n
            and sport.shape[0] == n and dport.shape[0] == n and out.shape[0] == n):
        raise ValueError("share_rows: columns of different lengths")
    if not (0 <= share < of <= 0xFFFFFFFF):
        raise ValueError("share_rows: need 0 <= share < of")
    cdef Py_ssize_t i, kept = 0
    cdef Tuple4 k
    cdef bint mine
    with nogil:
        for i in range(n):
            k = canonical(src_hi[i], src_lo[i], sport[i], dst_hi[i], dst_lo[i], dport[i])
            mine = _share_of(&k, <uint64_t>of) == share
            out[i] = mine
            kept += mine
    return kept
