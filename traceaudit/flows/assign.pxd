# Flow-table layouts shared by the compiled core and Python (traceaudit.flows.assign), and the
# 4-tuple hashing the retirement kernels share (traceaudit.retire.kernels).

from libc.stdint cimport int64_t, uint64_t

cpdef enum:
    # Per-connection integer fields (columns of the ``conn`` matrix; one row per connection).
    F_SLOT = 0  # the 4-tuple slot this connection lives in
    F_CLIENT_IS_A = 1  # 1 when the client is endpoint A of the slot (the lower address:port)
    F_GUESSED = 2  # 1 when no SYN / SYN-ACK fixed the orientation
    F_IPV = 3
    F_FIRST_TS = 4
    F_LAST_TS = 5
    F_FIRST_FRAME = 6
    F_LAST_FRAME = 7
    F_BASE = 8  # + d: Wireshark's base_seq of direction d (0 client→server, 1 back)
    F_BASE_SET = 10  # + d: 1 once that base_seq is known
    F_TUNNELED = 12
    F_UNUSED_13 = 13  # spare
    F_PREV = 14  # previous incarnation of the same 4-tuple, -1 when none
    # Per-direction blocks: d = 0 client→server, 1 server→client; field = base + d.
    F_PKTS = 15
    F_BYTES = 17
    F_PAYLOAD = 19
    F_DIR_FIRST_TS = 21
    F_DIR_LAST_TS = 23
    F_DIR_FIRST_FRAME = 25
    F_DIR_LAST_FRAME = 27
    N_FIELDS = 29

    # Slot fields (columns of the ``slots`` matrix; one row per 4-tuple).
    S_A_HI = 0
    S_A_LO = 1
    S_B_HI = 2
    S_B_LO = 3
    S_A_PORT = 4
    S_B_PORT = 5
    S_CONN = 6
    N_SLOT_FIELDS = 7


cdef extern from *:
    """
    static const uint64_t traceaudit_assign_GOLDEN = 0x9E3779B97F4A7C15ULL;
    """
    const uint64_t GOLDEN "traceaudit_assign_GOLDEN"


ctypedef struct Tuple4:
    # a 4-tuple with its endpoints ordered: A is the lower (address, port)
    uint64_t a_hi
    uint64_t a_lo
    int64_t a_port
    uint64_t b_hi
    uint64_t b_lo
    int64_t b_port
    bint src_is_a      # the segment's source is endpoint A


cdef inline uint64_t _mix(uint64_t h, uint64_t v) noexcept nogil:
    # uint64 arithmetic wraps mod 2**64
    h ^= v + GOLDEN + (h << 6) + (h >> 2)
    h *= 0xBF58476D1CE4E5B9ULL
    return h ^ (h >> 31)


cdef inline uint64_t _slot_hash(uint64_t a_hi, uint64_t a_lo, int64_t a_port, uint64_t b_hi,
                                uint64_t b_lo, int64_t b_port) noexcept nogil:
    # ports are cast to uint64 (a negative int64 wraps, as np.uint64 did)
    return _mix(_mix(_mix(_mix(_mix(_mix(0, a_hi), a_lo), <uint64_t>a_port), b_hi), b_lo),
                <uint64_t>b_port)


cdef inline Tuple4 canonical(uint64_t src_hi, uint64_t src_lo, int64_t sport, uint64_t dst_hi,
                             uint64_t dst_lo, int64_t dport) noexcept nogil:
    """Order the two endpoints: A is the lower (address, port) (addresses compare unsigned)."""
    cdef Tuple4 t
    cdef bint src_first = (src_hi < dst_hi) or (src_hi == dst_hi and (
        src_lo < dst_lo or (src_lo == dst_lo and sport <= dport)))
    if src_first:
        t.a_hi, t.a_lo, t.a_port = src_hi, src_lo, sport
        t.b_hi, t.b_lo, t.b_port = dst_hi, dst_lo, dport
    else:
        t.a_hi, t.a_lo, t.a_port = dst_hi, dst_lo, dport
        t.b_hi, t.b_lo, t.b_port = src_hi, src_lo, sport
    t.src_is_a = src_first
    return t
