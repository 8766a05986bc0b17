"""Compiled helpers of retirement: which rows may retire, the Bloom filter of retired 4-tuples,
and 4-tuple sets."""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

import numpy as np

from traceaudit.capture.tcpflags cimport ACK, SYN
from traceaudit.flows.assign cimport (F_BASE, F_BASE_SET, F_CLIENT_IS_A, F_LAST_TS, F_PREV,
                                      F_SLOT, GOLDEN, S_A_HI, S_A_LO, S_A_PORT, S_B_HI, S_B_LO,
                                      S_B_PORT, S_CONN, N_FIELDS, N_SLOT_FIELDS, Tuple4, _mix,
                                      _slot_hash, canonical)
from traceaudit.tracking.facts cimport ConnFacts, EndpointFacts
from traceaudit.tracking.kernel cimport expire_time_wait
from traceaudit.tracking.states cimport TIME_WAIT
from traceaudit.tracking.zeek_kernel cimport NO as ZK_NO, O_LIVE as ZK_O_LIVE

ctypedef int64_t[:, ::1] Matrix

# The kernels use the C constants; Python still finds the two names here (plain ints).
cdef enum:
    _ANY_SEQ = -1     # Bloom key value: the direction had no base sequence number yet
    _SIDE_TUPLE = 2   # Bloom key side: "this 4-tuple retired" (any segment)
ANY_SEQ = _ANY_SEQ
SIDE_TUPLE = _SIDE_TUPLE

# Addresses and ports of the rows ``tuple_rows`` tests: a batch's columns (uint64, uint16) or a
# record array's (int64).
ctypedef fused address_t:
    uint64_t
    int64_t

ctypedef fused port_t:
    uint16_t
    int64_t


def select_retirable(Matrix conn, Py_ssize_t n_conns, Matrix slots, Py_ssize_t n_slots,
                     EndpointFacts[:, ::1] ends, const ConnFacts[::1] conns,
                     const int64_t[::1] our_zrow, const int64_t[:, ::1] zout,
                     const int64_t[::1] slot_live, int64_t now, int64_t grace, int64_t msl2,
                     Matrix ev, int64_t n_ev, uint8_t[::1] retire, uint8_t[::1] freed):
    """Mark in ``retire`` the rows that may leave the working tables, in ``freed`` the slots
    that go with them; expire the retiring rows' TIME_WAITs (events into ``ev``). Returns the
    event count. ``ends``, ``conns``: the tracker's facts (facts.pxd); ``our_zrow`` empty: no
    Zeek view. (``retire`` and ``freed`` are bool arrays.)

    A row may retire when it has been idle for ``grace`` ns, no endpoint is in a TIME_WAIT that
    has not yet lasted 2×MSL, and its Zeek connection (if any) is no longer live. The latest
    row of a 4-tuple goes only with every other live row of that tuple and when Zeek holds
    nothing on it: otherwise a later segment could reach a slot whose connection is gone."""
    cdef bint zeek = our_zrow.shape[0] > 0
    if not (0 <= n_conns <= conn.shape[0] and n_conns <= ends.shape[0]
            and n_conns <= conns.shape[0] and ends.shape[1] == 2
            and n_conns <= retire.shape[0] and 0 <= n_slots <= slots.shape[0]
            and n_slots <= freed.shape[0] and conn.shape[1] >= N_FIELDS
            and slots.shape[1] >= N_SLOT_FIELDS
            and ev.shape[1] >= 6 and 0 <= n_ev and n_ev + 2 * n_conns <= ev.shape[0]
            and (not zeek or (our_zrow.shape[0] >= n_conns and slot_live.shape[0] >= n_slots
                              and zout.shape[1] >= ZK_NO))):
        raise ValueError("select_retirable: tables too small for the counts")
    cdef uint8_t[::1] cand = np.zeros(n_conns, np.uint8)
    cdef uint8_t[::1] slot_all = np.ones(n_slots, np.uint8)
    cdef Py_ssize_t r, e, s
    cdef int64_t z
    cdef bint ok
    with nogil:
        for r in range(n_conns):
            ok = now - conn[r, F_LAST_TS] >= grace and conns[r].initialised == 1
            if ok and zeek:
                z = our_zrow[r]
                ok = z < 0 or zout[z, ZK_O_LIVE] < 0
            if ok:
                for e in range(2):
                    if ends[r, e].state == TIME_WAIT and now < ends[r, e].tw_since_ns + msl2:
                        ok = False
            cand[r] = ok
            if not ok:
                slot_all[conn[r, F_SLOT]] = False
        for r in range(n_conns):
            if not cand[r]:
                continue
            s = conn[r, F_SLOT]
            if slots[s, S_CONN] == r:
                if not slot_all[s] or (zeek and slot_live[s] >= 0):
                    continue
                freed[s] = True
            retire[r] = True
            n_ev = expire_time_wait(ends, ev, n_ev, r, now, msl2)
    return n_ev


cdef inline uint64_t _key(uint64_t tuple_hash, int64_t side, int64_t value) noexcept nogil:
    # side and value are cast to uint64 (ANY_SEQ = -1 wraps, as np.uint64 did)
    return _mix(_mix(tuple_hash, <uint64_t>side), <uint64_t>value)


cdef inline void _bloom_bits(const uint64_t[::1] bits, uint64_t h, uint64_t out[3]) noexcept nogil:
    cdef uint64_t mask = <uint64_t>(bits.shape[0] * 64 - 1)
    cdef uint64_t h2 = _mix(h, GOLDEN) | 1
    out[0] = h & mask
    out[1] = (h + h2) & mask
    out[2] = (h + 2 * h2) & mask


cdef inline void _bloom_add(uint64_t[::1] bits, uint64_t h) noexcept nogil:
    cdef uint64_t at[3]
    cdef int j
    _bloom_bits(bits, h, at)
    for j in range(3):
        bits[at[j] >> 6] |= (<uint64_t>1) << (at[j] & 63)


cdef inline bint _bloom_has(const uint64_t[::1] bits, uint64_t h) noexcept nogil:
    cdef uint64_t at[3]
    cdef int j
    _bloom_bits(bits, h, at)
    for j in range(3):
        if bits[at[j] >> 6] & ((<uint64_t>1) << (at[j] & 63)) == 0:
            return False
    return True


cdef inline uint64_t _tuple_hash(Matrix slots, Py_ssize_t s) noexcept nogil:
    return _slot_hash(<uint64_t>slots[s, S_A_HI], <uint64_t>slots[s, S_A_LO],
                      slots[s, S_A_PORT], <uint64_t>slots[s, S_B_HI],
                      <uint64_t>slots[s, S_B_LO], slots[s, S_B_PORT])


def remember_retired(uint64_t[::1] bits, Matrix conn, Matrix slots, const int64_t[::1] freed_slots):
    """Bloom keys of the freed slots' last connections: the tuple, and per side the base
    sequence number a new pure SYN from that side must differ from to start a new incarnation
    (``assign.reuses_slot``)."""
    if bits.shape[0] == 0 or conn.shape[1] < N_FIELDS or slots.shape[1] < N_SLOT_FIELDS:
        raise ValueError("remember_retired: empty filter or bad table shapes")
    cdef Py_ssize_t j, s, c, side, d
    cdef uint64_t h
    cdef int64_t value
    with nogil:
        for j in range(freed_slots.shape[0]):
            s = freed_slots[j]
            c = slots[s, S_CONN]
            h = _tuple_hash(slots, s)
            _bloom_add(bits, _key(h, _SIDE_TUPLE, 0))
            for side in range(2):
                d = 0 if (side == 0) == (conn[c, F_CLIENT_IS_A] == 1) else 1
                value = conn[c, F_BASE + d] if conn[c, F_BASE_SET + d] == 1 else _ANY_SEQ
                _bloom_add(bits, _key(h, side, value))


def returning_slots(const uint64_t[::1] bits, const int64_t[::1] conn_ids,
                    const uint8_t[::1] from_client, const uint16_t[::1] flags,
                    const uint32_t[::1] seq, Matrix conn, Matrix slots, Py_ssize_t first_new_slot,
                    Py_ssize_t first_new_conn, Py_ssize_t n_conns):
    """Slots created in this batch whose 4-tuple may have retired before, unless their first
    segment is a pure SYN that would have started a new incarnation anyway. Returns a bool mask
    over the batch's new connections (index c - first_new_conn) marking their slots' first.
    (``from_client`` is a bool array.)"""
    cdef Py_ssize_t rows = conn_ids.shape[0]
    if not (from_client.shape[0] == rows and flags.shape[0] == rows and seq.shape[0] == rows
            and bits.shape[0] > 0 and 0 <= first_new_conn <= n_conns <= conn.shape[0]
            and conn.shape[1] >= N_FIELDS and slots.shape[1] >= N_SLOT_FIELDS):
        raise ValueError("returning_slots: columns of different lengths or bad counts")
    seen_arr = np.zeros(n_conns - first_new_conn, np.bool_)
    hit_arr = np.zeros(n_conns - first_new_conn, np.bool_)
    cdef uint8_t[::1] seen = seen_arr
    cdef uint8_t[::1] hit = hit_arr
    cdef Py_ssize_t i, c, s, side
    cdef uint64_t h
    with nogil:
        for i in range(rows):
            c = conn_ids[i]
            # (the batch's connections are all below n_conns: a row outside is skipped too)
            if c < first_new_conn or c >= n_conns or seen[c - first_new_conn]:
                continue
            seen[c - first_new_conn] = True
            s = conn[c, F_SLOT]
            if s < first_new_slot or conn[c, F_PREV] >= 0:
                continue
            h = _tuple_hash(slots, s)
            side = 0 if (from_client[i] != 0) == (conn[c, F_CLIENT_IS_A] == 1) else 1
            if (flags[i] & (SYN | ACK)) == SYN:
                hit[c - first_new_conn] = _bloom_has(bits, _key(h, side, seq[i])) or \
                    _bloom_has(bits, _key(h, side, _ANY_SEQ))
            else:
                hit[c - first_new_conn] = _bloom_has(bits, _key(h, _SIDE_TUPLE, 0))
    return hit_arr


def tuple_rows(int64_t[::1] ht, const int64_t[:, :] tuples, const address_t[:] src_hi,
               const address_t[:] src_lo, const port_t[:] sport, const address_t[:] dst_hi,
               const address_t[:] dst_lo, const port_t[:] dport):
    """Mask of the rows whose 4-tuple (either direction) is among ``tuples`` (slot-shaped rows
    indexed by the open-addressing table ``ht``, see ``assign.rebuild_table``)."""
    # (int64 addresses, a record array's, are read as uint64 and ordered unsigned, as
    # np.uint64() of them did)
    cdef Py_ssize_t rows = src_hi.shape[0]
    if not (src_lo.shape[0] == rows and sport.shape[0] == rows and dst_hi.shape[0] == rows
            and dst_lo.shape[0] == rows and dport.shape[0] == rows
            and tuples.shape[1] >= N_SLOT_FIELDS and ht.shape[0] > 0
            and ht.shape[0] & (ht.shape[0] - 1) == 0):
        raise ValueError("tuple_rows: columns of different lengths or bad table")
    out_arr = np.zeros(rows, np.bool_)
    cdef uint8_t[::1] out = out_arr
    cdef uint64_t mask = <uint64_t>(ht.shape[0] - 1)
    cdef uint64_t j
    cdef Py_ssize_t i, s
    cdef Tuple4 k
    with nogil:
        for i in range(rows):
            k = canonical(<uint64_t>src_hi[i], <uint64_t>src_lo[i], <int64_t>sport[i],
                          <uint64_t>dst_hi[i], <uint64_t>dst_lo[i], <int64_t>dport[i])
            j = _slot_hash(k.a_hi, k.a_lo, k.a_port, k.b_hi, k.b_lo, k.b_port) & mask
            while ht[j] >= 0:
                s = ht[j]
                if tuples[s, S_A_LO] == <int64_t>k.a_lo and tuples[s, S_B_LO] == <int64_t>k.b_lo \
                        and tuples[s, S_A_PORT] == k.a_port and tuples[s, S_B_PORT] == k.b_port \
                        and tuples[s, S_A_HI] == <int64_t>k.a_hi \
                        and tuples[s, S_B_HI] == <int64_t>k.b_hi:
                    out[i] = True
                    break
                j = (j + 1) & mask
    return out_arr
