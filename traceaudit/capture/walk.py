"""Compiled record walks for classic pcap and pcapng: find each packet's bytes in a buffer.

A walk stops when its record arrays are full, when the buffer runs out mid-record (the caller
reads more), or at something it must hand back to Python (a pcapng section or interface block,
damage). Offsets are positions in the buffer; the caller maps them to file offsets.
"""

from __future__ import annotations

import numpy as np

from traceaudit.jit import njit

# Why a walk returned.
FULL = 0            # record arrays are full; call again
NEED_MORE = 1       # the buffer ends inside a record or block header
BAD_LENGTH = 2      # a record/block length is absurd
STRUCTURAL = 3      # pcapng: a section header or interface block for Python to parse
CORRUPT = 4         # pcapng: a block's trailing length differs, or a field is impossible
UNKNOWN_IF = 5      # pcapng: a packet names an interface that was never described
UNSUPPORTED_LINK = 6  # pcapng: a packet on an interface whose link type we cannot decode

SHB_TYPE = 0x0A0D0D0A
IDB_TYPE = 0x00000001
PB_TYPE = 0x00000002       # obsolete Packet Block
SPB_TYPE = 0x00000003
EPB_TYPE = 0x00000006


@njit(inline="always")
def rd32(b, p, little):
    if little:
        return (np.int64(b[p + 3]) << 24) | (np.int64(b[p + 2]) << 16) | \
            (np.int64(b[p + 1]) << 8) | np.int64(b[p])
    return (np.int64(b[p]) << 24) | (np.int64(b[p + 1]) << 16) | \
        (np.int64(b[p + 2]) << 8) | np.int64(b[p + 3])


@njit(inline="always")
def rd16(b, p, little):
    if little:
        return (np.int64(b[p + 1]) << 8) | np.int64(b[p])
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@njit(cache=True, nogil=True)
def walk_pcap(buf, pos, end, little, frac_ns, max_len, rec_off, rec_caplen, rec_origlen,
              rec_ts):
    """Walk classic pcap records from ``pos``. Returns (records, new pos, status)."""
    n = 0
    cap = len(rec_off)
    while n < cap:
        if pos + 16 > end:
            return n, pos, NEED_MORE
        incl = rd32(buf, pos + 8, little)
        if incl > max_len:
            return n, pos, BAD_LENGTH
        if pos + 16 + incl > end:
            return n, pos, NEED_MORE
        rec_ts[n] = rd32(buf, pos, little) * 1_000_000_000 + rd32(buf, pos + 4, little) * frac_ns
        rec_caplen[n] = incl
        rec_origlen[n] = rd32(buf, pos + 12, little)
        rec_off[n] = pos + 16
        pos += 16 + incl
        n += 1
    return n, pos, FULL


@njit(cache=True)
def units_to_ns(units, base, offset_ns):
    """Convert pcapng timestamp units (1/base s) to epoch nanoseconds without overflow."""
    sec = units // base
    frac = units % base
    if base <= 1_000_000_000:
        return sec * 1_000_000_000 + (frac * 1_000_000_000) // base + offset_ns
    return sec * 1_000_000_000 + frac // (base // 1_000_000_000) + offset_ns


@njit(cache=True, nogil=True)
def walk_pcapng(buf, pos, end, little, if_link, if_base, if_offset_ns, if_snap, max_block,
                last_ts, rec_off, rec_caplen, rec_origlen, rec_ts, rec_link):
    """Walk pcapng blocks from ``pos``. Returns (records, new pos, status, last timestamp)."""
    n = 0
    cap = len(rec_off)
    n_if = len(if_link)
    while n < cap:
        if pos + 12 > end:
            return n, pos, NEED_MORE, last_ts
        btype = rd32(buf, pos, little)
        if btype == SHB_TYPE or btype == IDB_TYPE:
            return n, pos, STRUCTURAL, last_ts
        blen = rd32(buf, pos + 4, little)
        if blen < 12 or (blen & 3) != 0 or blen > max_block:
            return n, pos, BAD_LENGTH, last_ts
        if pos + blen > end:
            return n, pos, NEED_MORE, last_ts
        if rd32(buf, pos + blen - 4, little) != blen:
            return n, pos, CORRUPT, last_ts
        if btype == EPB_TYPE or btype == PB_TYPE:
            if blen < 32:
                return n, pos, CORRUPT, last_ts
            if btype == EPB_TYPE:
                ifid = rd32(buf, pos + 8, little)
            else:
                ifid = rd16(buf, pos + 8, little)
            if ifid >= n_if:
                return n, pos, UNKNOWN_IF, last_ts
            if if_link[ifid] < 0:
                return n, pos, UNSUPPORTED_LINK, last_ts
            caplen = rd32(buf, pos + 20, little)
            if 28 + caplen > blen - 4:
                return n, pos, CORRUPT, last_ts
            units = (rd32(buf, pos + 12, little) << 32) | rd32(buf, pos + 16, little)
            last_ts = units_to_ns(units, if_base[ifid], if_offset_ns[ifid])
            rec_ts[n] = last_ts
            rec_caplen[n] = caplen
            rec_origlen[n] = rd32(buf, pos + 24, little)
            rec_off[n] = pos + 28
            rec_link[n] = if_link[ifid]
            n += 1
        elif btype == SPB_TYPE:
            if n_if == 0:
                return n, pos, UNKNOWN_IF, last_ts
            if if_link[0] < 0:
                return n, pos, UNSUPPORTED_LINK, last_ts
            origlen = rd32(buf, pos + 8, little)
            caplen = min(origlen, blen - 16)
            if if_snap[0] > 0:
                caplen = min(caplen, if_snap[0])
            rec_ts[n] = last_ts         # a simple packet block carries no timestamp
            rec_caplen[n] = caplen
            rec_origlen[n] = origlen
            rec_off[n] = pos + 12
            rec_link[n] = if_link[0]
            n += 1
        pos += blen
    return n, pos, FULL, last_ts
