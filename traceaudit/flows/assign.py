"""Compiled connection assignment: each segment → (connection id, direction), with per-direction
counters, across batches.

A 4-tuple ("slot") is looked up in an open-addressing hash table; each slot points at its current
connection ("incarnation"). A new incarnation starts on port reuse, with the rule Wireshark uses
for ``tcp.stream`` so that connection ids equal Wireshark's stream numbers (see ``reuses_slot``).
"""

from __future__ import annotations

import numpy as np

from traceaudit.capture.batch import ACK, SYN
from traceaudit.jit import njit

# Per-connection integer fields (columns of the ``conn`` matrix; one row per connection).
F_SLOT = 0            # the 4-tuple slot this connection lives in
F_CLIENT_IS_A = 1     # 1 when the client is endpoint A of the slot (the lower address:port)
F_GUESSED = 2         # 1 when no SYN / SYN-ACK fixed the orientation
F_IPV = 3
F_FIRST_TS = 4
F_LAST_TS = 5
F_FIRST_FRAME = 6
F_LAST_FRAME = 7
F_BASE = 8            # + d: Wireshark's base_seq of direction d (0 client→server, 1 back)
F_BASE_SET = 10       # + d: 1 once that base_seq is known
F_TUNNELED = 12
F_UNUSED_13 = 13      # spare
F_PREV = 14           # previous incarnation of the same 4-tuple, -1 when none
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
S_A_HI, S_A_LO, S_B_HI, S_B_LO, S_A_PORT, S_B_PORT, S_CONN = range(7)
N_SLOT_FIELDS = 7

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(inline="always")
def _mix(h, v):
    h ^= v + GOLDEN + (h << np.uint64(6)) + (h >> np.uint64(2))
    h *= np.uint64(0xBF58476D1CE4E5B9)
    return h ^ (h >> np.uint64(31))


@njit(cache=True)
def canonical(src_hi, src_lo, sport, dst_hi, dst_lo, dport):
    """Order the two endpoints: A is the lower (address, port). Returns (a..., b..., src_is_a)."""
    src_first = (src_hi < dst_hi) or (src_hi == dst_hi and (
        src_lo < dst_lo or (src_lo == dst_lo and sport <= dport)))
    if src_first:
        return src_hi, src_lo, sport, dst_hi, dst_lo, dport, True
    return dst_hi, dst_lo, dport, src_hi, src_lo, sport, False


@njit(cache=True)
def server_port_guess(sport, dport):
    """Which side is the server when no SYN says so: True when the destination is.

    Documented heuristic: a port below 1024 against one above is the server; else a port outside
    Linux's ephemeral range (32768–60999) against one inside it; else the lower port; equal ports:
    the destination of the first packet seen.
    """
    if (dport < 1024) != (sport < 1024):
        return dport < 1024
    d_eph = dport >= 32768 and dport <= 60999
    s_eph = sport >= 32768 and sport <= 60999
    if d_eph != s_eph:
        return s_eph
    if dport != sport:
        return dport < sport
    return True


@njit(cache=True)
def reuses_slot(conn, c, flags, seq, d):
    """True when this segment starts a new incarnation of connection ``c``'s 4-tuple.

    Wireshark's ``tcp.stream`` rule: a pure SYN (SYN set, ACK clear) whose sequence number
    differs from the base sequence number already known for its own direction. Nothing else
    splits: not a SYN with the same ISN, not a SYN-ACK, not FIN/RST, not time.
    """
    if (flags & (SYN | ACK)) != SYN:
        return False
    return conn[c, F_BASE_SET + d] == 1 and conn[c, F_BASE + d] != seq


@njit(cache=True)
def _note_base(conn, c, d, flags, seq, ack):
    """Wireshark's base_seq bookkeeping for both directions of connection c."""
    if conn[c, F_BASE_SET + d] == 0:
        conn[c, F_BASE_SET + d] = 1
        conn[c, F_BASE + d] = seq if flags & SYN else (seq - 1) & 0xFFFFFFFF
    elif (flags & (SYN | ACK)) == (SYN | ACK) and conn[c, F_BASE + d] != seq:
        conn[c, F_BASE + d] = seq             # a SYN-ACK with a new ISN re-bases its flow
    if flags & ACK and conn[c, F_BASE_SET + 1 - d] == 0:
        conn[c, F_BASE_SET + 1 - d] = 1
        conn[c, F_BASE + 1 - d] = (ack - 1) & 0xFFFFFFFF


@njit(inline="always")
def _slot_hash(a_hi, a_lo, a_port, b_hi, b_lo, b_port):
    return _mix(_mix(_mix(_mix(_mix(_mix(np.uint64(0), a_hi), a_lo), np.uint64(a_port)), b_hi),
                     b_lo), np.uint64(b_port))


@njit(cache=True)
def rebuild_table(ht, slots, n_slots):
    """Insert slots 0..n_slots-1 into the empty table ``ht`` (after it was enlarged)."""
    mask = np.uint64(len(ht) - 1)
    for s in range(n_slots):
        i = _slot_hash(np.uint64(slots[s, S_A_HI]), np.uint64(slots[s, S_A_LO]), slots[s, S_A_PORT],
                       np.uint64(slots[s, S_B_HI]), np.uint64(slots[s, S_B_LO]),
                       slots[s, S_B_PORT]) & mask
        while ht[i] >= 0:
            i = (i + np.uint64(1)) & mask
        ht[i] = s


@njit(cache=True)
def _lookup(ht, slots, n_slots, a_hi, a_lo, a_port, b_hi, b_lo, b_port):
    """Slot index for the 4-tuple, inserting it when new. Returns (slot, n_slots)."""
    mask = np.uint64(len(ht) - 1)
    i = _slot_hash(a_hi, a_lo, a_port, b_hi, b_lo, b_port) & mask
    while True:
        s = ht[i]
        if s < 0:
            s = n_slots
            ht[i] = s
            slots[s, S_A_HI] = np.int64(a_hi)
            slots[s, S_A_LO] = np.int64(a_lo)
            slots[s, S_B_HI] = np.int64(b_hi)
            slots[s, S_B_LO] = np.int64(b_lo)
            slots[s, S_A_PORT] = a_port
            slots[s, S_B_PORT] = b_port
            slots[s, S_CONN] = -1
            return s, n_slots + 1
        if slots[s, S_A_LO] == np.int64(a_lo) and slots[s, S_B_LO] == np.int64(b_lo) and \
                slots[s, S_A_PORT] == a_port and slots[s, S_B_PORT] == b_port and \
                slots[s, S_A_HI] == np.int64(a_hi) and slots[s, S_B_HI] == np.int64(b_hi):
            return s, n_slots
        i = (i + np.uint64(1)) & mask


@njit(cache=True)
def _new_conn(conn, n_conns, s, src_is_a, flags, sport, dport, ipv, tunneled):
    c = n_conns
    conn[c, :] = 0
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


@njit(cache=True, nogil=True)
def assign_batch(src_hi, src_lo, dst_hi, dst_lo, sport, dport, flags, seq, ack, ts, frame,
                 frame_len, payload_len, ipv, tunneled, ht, slots, n_slots, conn, n_conns,
                 out_conn, out_from_client, start):
    """Assign rows ``start``.. of a batch. Returns (n_slots, n_conns, next row).

    Stops early, before a row, when a new slot or connection might not fit (``slots`` or
    ``conn`` full, or ``ht`` half full), so that the caller can grow them and call again.
    """
    # the previous segment's 4-tuple and slot: about half the segments of a capture follow one
    # of the same connection, and skip the hash and the table probe
    last_s = -1
    last_a_hi = last_a_lo = last_b_hi = last_b_lo = np.uint64(0)
    last_a_port = last_b_port = np.int64(-1)
    for i in range(start, len(src_hi)):
        if n_conns >= len(conn) or n_slots >= len(slots) or 2 * (n_slots + 1) > len(ht):
            return n_slots, n_conns, i
        a_hi, a_lo, a_port, b_hi, b_lo, b_port, src_is_a = canonical(
            np.uint64(src_hi[i]), np.uint64(src_lo[i]), np.int64(sport[i]),
            np.uint64(dst_hi[i]), np.uint64(dst_lo[i]), np.int64(dport[i]))
        if last_s >= 0 and a_lo == last_a_lo and b_lo == last_b_lo and a_port == last_a_port \
                and b_port == last_b_port and a_hi == last_a_hi and b_hi == last_b_hi:
            s = last_s
        else:
            s, n_slots = _lookup(ht, slots, n_slots, a_hi, a_lo, a_port, b_hi, b_lo, b_port)
            last_s = s
            last_a_hi, last_a_lo, last_a_port = a_hi, a_lo, a_port
            last_b_hi, last_b_lo, last_b_port = b_hi, b_lo, b_port
        f = np.int64(flags[i])
        sq = np.int64(seq[i])
        c = slots[s, S_CONN]
        if c >= 0:
            from_client = (conn[c, F_CLIENT_IS_A] == 1) == src_is_a
            if reuses_slot(conn, c, f, sq, 0 if from_client else 1):
                c = -1
        if c < 0:
            prev = slots[s, S_CONN]
            c = _new_conn(conn, n_conns, s, src_is_a, f, sport[i], dport[i], ipv[i], tunneled[i])
            conn[c, F_PREV] = prev
            n_conns += 1
            slots[s, S_CONN] = c
            conn[c, F_FIRST_TS] = ts[i]
            conn[c, F_FIRST_FRAME] = frame[i]
        from_client = (conn[c, F_CLIENT_IS_A] == 1) == src_is_a
        d = 0 if from_client else 1
        _note_base(conn, c, d, f, sq, np.int64(ack[i]))
        conn[c, F_LAST_TS] = max(conn[c, F_LAST_TS], ts[i])
        conn[c, F_LAST_FRAME] = frame[i]
        conn[c, F_PKTS + d] += 1
        conn[c, F_BYTES + d] += frame_len[i]
        conn[c, F_PAYLOAD + d] += payload_len[i]
        if conn[c, F_DIR_FIRST_FRAME + d] < 0:
            conn[c, F_DIR_FIRST_FRAME + d] = frame[i]
            conn[c, F_DIR_FIRST_TS + d] = ts[i]
        conn[c, F_DIR_LAST_FRAME + d] = frame[i]
        conn[c, F_DIR_LAST_TS + d] = max(conn[c, F_DIR_LAST_TS + d], ts[i])
        out_conn[i] = c
        out_from_client[i] = from_client
    return n_slots, n_conns, len(src_hi)
