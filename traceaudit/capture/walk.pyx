"""Compiled record walks for classic pcap and pcapng: find each packet's bytes in a buffer.

A walk stops when its record arrays are full, when the buffer runs out mid-record (the caller
reads more), or at something it must hand back to Python (a pcapng section or interface block,
damage). Offsets are positions in the buffer; the caller maps them to file offsets.

Every length read from the file is checked against the buffer end before anything is read
through it (the core indexes without bounds checks); the walks also check on entry that the
caller's ``end`` lies within ``buf`` and that the record arrays are long enough.
"""

cimport cython
from libc.stdint cimport int64_t, uint8_t, uint64_t

# Why a walk returned.
cpdef enum:
    FULL = 0            # record arrays are full; call again
    NEED_MORE = 1       # the buffer ends inside a record or block header
    BAD_LENGTH = 2      # a record/block length is absurd
    STRUCTURAL = 3      # pcapng: a section header or interface block for Python to parse
    CORRUPT = 4         # pcapng: a block's trailing length differs, or a field is impossible
    UNKNOWN_IF = 5      # pcapng: a packet names an interface that was never described
    UNSUPPORTED_LINK = 6  # pcapng: a packet on an interface whose link type we cannot decode

    # Block types.
    SHB_TYPE = 0x0A0D0D0A
    IDB_TYPE = 0x00000001
    PB_TYPE = 0x00000002       # obsolete Packet Block
    SPB_TYPE = 0x00000003
    EPB_TYPE = 0x00000006


cdef inline int64_t rd32(const uint8_t[::1] b, Py_ssize_t p, bint little) noexcept nogil:
    if little:
        return (<int64_t>b[p + 3] << 24) | (<int64_t>b[p + 2] << 16) | \
            (<int64_t>b[p + 1] << 8) | <int64_t>b[p]
    return (<int64_t>b[p] << 24) | (<int64_t>b[p + 1] << 16) | \
        (<int64_t>b[p + 2] << 8) | <int64_t>b[p + 3]


cdef inline int64_t rd16(const uint8_t[::1] b, Py_ssize_t p, bint little) noexcept nogil:
    if little:
        return (<int64_t>b[p + 1] << 8) | <int64_t>b[p]
    return (<int64_t>b[p] << 8) | <int64_t>b[p + 1]


cdef inline void _check_buffer(const uint8_t[::1] buf, int64_t pos, int64_t end) except *:
    if pos < 0 or end < 0 or end > buf.shape[0]:
        raise ValueError(f"walk: pos {pos} / end {end} outside a buffer of {buf.shape[0]} bytes")


def walk_pcap(const uint8_t[::1] buf, int64_t pos, int64_t end, bint little, int64_t frac_ns,
              int64_t max_len, int64_t[::1] rec_off, int64_t[::1] rec_caplen,
              int64_t[::1] rec_origlen, int64_t[::1] rec_ts):
    """Walk classic pcap records from ``pos``. Returns (records, new pos, status)."""
    cdef Py_ssize_t n = 0
    cdef Py_ssize_t cap = rec_off.shape[0]
    cdef int64_t incl
    cdef int status = FULL
    _check_buffer(buf, pos, end)
    if rec_caplen.shape[0] < cap or rec_origlen.shape[0] < cap or rec_ts.shape[0] < cap:
        raise ValueError("walk_pcap: record arrays of different lengths")
    with nogil:
        while n < cap:
            if pos + 16 > end:
                status = NEED_MORE
                break
            incl = rd32(buf, pos + 8, little)     # 0 .. 2**32-1, from the file
            if incl > max_len:
                status = BAD_LENGTH
                break
            if pos + 16 + incl > end:             # the record's bytes lie within the buffer
                status = NEED_MORE
                break
            rec_ts[n] = rd32(buf, pos, little) * 1_000_000_000 + rd32(buf, pos + 4, little) * frac_ns
            rec_caplen[n] = incl
            rec_origlen[n] = rd32(buf, pos + 12, little)
            rec_off[n] = pos + 16
            pos += 16 + incl
            n += 1
    return n, pos, status


@cython.cdivision(True)
cdef inline int64_t _units_to_ns(int64_t units, int64_t base, int64_t offset_ns) noexcept nogil:
    # C division truncates: floor it by hand as Python's // and % do (units may be negative,
    # a 64-bit count with its top bit set; base >= 1, see below).
    cdef int64_t sec, frac
    if base < 1:          # the reader clamps if_tsresol to >= 1; never divide by zero here
        base = 1
    sec = units / base
    frac = units - sec * base
    if frac < 0:
        frac += base
        sec -= 1
    # both operands non-negative from here on
    if base <= 1_000_000_000:
        return sec * 1_000_000_000 + (frac * 1_000_000_000) / base + offset_ns
    return sec * 1_000_000_000 + frac / (base / 1_000_000_000) + offset_ns


def units_to_ns(int64_t units, int64_t base, int64_t offset_ns):
    """Convert pcapng timestamp units (1/base s) to epoch nanoseconds without overflow."""
    return _units_to_ns(units, base, offset_ns)


def walk_pcapng(const uint8_t[::1] buf, int64_t pos, int64_t end, bint little,
                const int64_t[::1] if_link, const int64_t[::1] if_base,
                const int64_t[::1] if_offset_ns, const int64_t[::1] if_snap, int64_t max_block,
                int64_t last_ts, int64_t[::1] rec_off, int64_t[::1] rec_caplen,
                int64_t[::1] rec_origlen, int64_t[::1] rec_ts, int64_t[::1] rec_link):
    """Walk pcapng blocks from ``pos``. Returns (records, new pos, status, last timestamp)."""
    cdef Py_ssize_t n = 0
    cdef Py_ssize_t cap = rec_off.shape[0]
    cdef Py_ssize_t n_if = if_link.shape[0]
    cdef int64_t btype, blen, ifid, caplen, origlen, units
    cdef int status = FULL
    _check_buffer(buf, pos, end)
    if rec_caplen.shape[0] < cap or rec_origlen.shape[0] < cap or rec_ts.shape[0] < cap \
            or rec_link.shape[0] < cap:
        raise ValueError("walk_pcapng: record arrays of different lengths")
    if if_base.shape[0] < n_if or if_offset_ns.shape[0] < n_if or if_snap.shape[0] < n_if:
        raise ValueError("walk_pcapng: interface arrays of different lengths")
    if max_block < 12:
        raise ValueError("walk_pcapng: max_block below the smallest block")
    with nogil:
        while n < cap:
            if pos + 12 > end:
                status = NEED_MORE
                break
            btype = rd32(buf, pos, little)
            if btype == SHB_TYPE or btype == IDB_TYPE:
                status = STRUCTURAL
                break
            blen = rd32(buf, pos + 4, little)
            if blen < 12 or (blen & 3) != 0 or blen > max_block:
                status = BAD_LENGTH
                break
            if pos + blen > end:                  # the whole block lies within the buffer
                status = NEED_MORE
                break
            if rd32(buf, pos + blen - 4, little) != blen:
                status = CORRUPT
                break
            if btype == EPB_TYPE or btype == PB_TYPE:
                if blen < 32:                     # fixed fields (28 bytes) + trailing length
                    status = CORRUPT
                    break
                if btype == EPB_TYPE:
                    ifid = rd32(buf, pos + 8, little)
                else:
                    ifid = rd16(buf, pos + 8, little)
                if ifid >= n_if:                  # ifid >= 0: read unsigned
                    status = UNKNOWN_IF
                    break
                if if_link[ifid] < 0:
                    status = UNSUPPORTED_LINK
                    break
                caplen = rd32(buf, pos + 20, little)
                if 28 + caplen > blen - 4:        # the packet bytes lie within the block
                    status = CORRUPT
                    break
                # a 64-bit count, shifted as unsigned (a signed shift into the sign bit is undefined)
                units = <int64_t>((<uint64_t>rd32(buf, pos + 12, little) << 32)
                                  | <uint64_t>rd32(buf, pos + 16, little))
                last_ts = _units_to_ns(units, if_base[ifid], if_offset_ns[ifid])
                rec_ts[n] = last_ts
                rec_caplen[n] = caplen
                rec_origlen[n] = rd32(buf, pos + 24, little)
                rec_off[n] = pos + 28
                rec_link[n] = if_link[ifid]
                n += 1
            elif btype == SPB_TYPE:
                if n_if == 0:
                    status = UNKNOWN_IF
                    break
                if if_link[0] < 0:
                    status = UNSUPPORTED_LINK
                    break
                origlen = rd32(buf, pos + 8, little)   # blen >= 12: within the block
                caplen = min(origlen, blen - 16)
                if if_snap[0] > 0:
                    caplen = min(caplen, if_snap[0])
                if caplen < 0:
                    # a 12-byte SPB has no room for its original-length field: nothing to decode
                    caplen = 0
                rec_ts[n] = last_ts         # a simple packet block carries no timestamp
                rec_caplen[n] = caplen
                rec_origlen[n] = origlen
                rec_off[n] = pos + 12
                rec_link[n] = if_link[0]
                n += 1
            pos += blen
    return n, pos, status, last_ts
