"""Compiled helpers of retirement: which rows may retire, the Bloom filter of retired 4-tuples,
and 4-tuple sets."""

from __future__ import annotations

import numpy as np

from traceaudit.capture.batch import ACK, SYN
from traceaudit.flows import assign as A
from traceaudit.jit import njit
from traceaudit.tracking import kernel as K
from traceaudit.tracking import zeek_kernel as ZK

ANY_SEQ = -1          # Bloom key value: the direction had no base sequence number yet
SIDE_TUPLE = 2        # Bloom key side: "this 4-tuple retired" (any segment)


@njit(cache=True)
def select_retirable(conn, n_conns, slots, n_slots, trk, our_zrow, zout, slot_live, now, grace,
                     msl2, ev, n_ev, retire, freed):
    """Mark in ``retire`` the rows that may leave the working tables, in ``freed`` the slots
    that go with them; expire the retiring rows' TIME_WAITs (events into ``ev``). Returns the
    event count. ``our_zrow`` empty: no Zeek view.

    A row may retire when it has been idle for ``grace`` ns, no endpoint is in a TIME_WAIT that
    has not yet lasted 2×MSL, and its Zeek connection (if any) is no longer live. The latest
    row of a 4-tuple goes only with every other live row of that tuple and when Zeek holds
    nothing on it: otherwise a later segment could reach a slot whose connection is gone."""
    cand = np.zeros(n_conns, np.bool_)
    slot_all = np.ones(n_slots, np.bool_)
    zeek = len(our_zrow) > 0
    for r in range(n_conns):
        ok = now - conn[r, A.F_LAST_TS] >= grace and trk[r, K.K_INIT] == 1
        if ok and zeek:
            z = our_zrow[r]
            ok = z < 0 or zout[z, ZK.O_LIVE] < 0
        if ok:
            for e in range(2):
                o = e * K.NE
                if trk[r, o + K.E_STATE] == K.TIME_WAIT and now < trk[r, o + K.E_TW_TS] + msl2:
                    ok = False
        cand[r] = ok
        if not ok:
            slot_all[conn[r, A.F_SLOT]] = False
    for r in range(n_conns):
        if not cand[r]:
            continue
        s = conn[r, A.F_SLOT]
        if slots[s, A.S_CONN] == r:
            if not slot_all[s] or (zeek and slot_live[s] >= 0):
                continue
            freed[s] = True
        retire[r] = True
        n_ev = K.expire_time_wait(trk, ev, n_ev, r, now, msl2)
    return n_ev


@njit(inline="always")
def _key(tuple_hash, side, value):
    return A._mix(A._mix(tuple_hash, np.uint64(side)), np.uint64(value))


@njit(inline="always")
def _bloom_bits(bits, h):
    mask = np.uint64(len(bits) * 64 - 1)
    h2 = A._mix(h, A.GOLDEN) | np.uint64(1)
    return (h & mask, (h + h2) & mask, (h + np.uint64(2) * h2) & mask)


@njit(cache=True)
def _bloom_add(bits, h):
    for i in _bloom_bits(bits, h):
        bits[i >> np.uint64(6)] |= np.uint64(1) << (i & np.uint64(63))


@njit(cache=True)
def _bloom_has(bits, h):
    for i in _bloom_bits(bits, h):
        if bits[i >> np.uint64(6)] & (np.uint64(1) << (i & np.uint64(63))) == 0:
            return False
    return True


@njit(inline="always")
def _tuple_hash(slots, s):
    return A._slot_hash(np.uint64(slots[s, A.S_A_HI]), np.uint64(slots[s, A.S_A_LO]),
                        slots[s, A.S_A_PORT], np.uint64(slots[s, A.S_B_HI]),
                        np.uint64(slots[s, A.S_B_LO]), slots[s, A.S_B_PORT])


@njit(cache=True)
def remember_retired(bits, conn, slots, freed_slots):
    """Bloom keys of the freed slots' last connections: the tuple, and per side the base
    sequence number a new pure SYN from that side must differ from to start a new incarnation
    (``assign.reuses_slot``)."""
    for s in freed_slots:
        c = slots[s, A.S_CONN]
        h = _tuple_hash(slots, s)
        _bloom_add(bits, _key(h, SIDE_TUPLE, 0))
        for side in range(2):
            d = 0 if (side == 0) == (conn[c, A.F_CLIENT_IS_A] == 1) else 1
            value = conn[c, A.F_BASE + d] if conn[c, A.F_BASE_SET + d] == 1 else ANY_SEQ
            _bloom_add(bits, _key(h, side, value))


@njit(cache=True)
def returning_slots(bits, conn_ids, from_client, flags, seq, conn, slots, first_new_slot,
                    first_new_conn, n_conns):
    """Slots created in this batch whose 4-tuple may have retired before, unless their first
    segment is a pure SYN that would have started a new incarnation anyway. Returns a bool mask
    over the batch's new connections (index c - first_new_conn) marking their slots' first."""
    seen = np.zeros(n_conns - first_new_conn, np.bool_)
    hit = np.zeros(n_conns - first_new_conn, np.bool_)
    for i in range(len(conn_ids)):
        c = conn_ids[i]
        if c < first_new_conn or seen[c - first_new_conn]:
            continue
        seen[c - first_new_conn] = True
        s = conn[c, A.F_SLOT]
        if s < first_new_slot or conn[c, A.F_PREV] >= 0:
            continue
        h = _tuple_hash(slots, s)
        side = 0 if from_client[i] == (conn[c, A.F_CLIENT_IS_A] == 1) else 1
        if (np.int64(flags[i]) & (SYN | ACK)) == SYN:
            hit[c - first_new_conn] = _bloom_has(bits, _key(h, side, np.int64(seq[i]))) or \
                _bloom_has(bits, _key(h, side, ANY_SEQ))
        else:
            hit[c - first_new_conn] = _bloom_has(bits, _key(h, SIDE_TUPLE, 0))
    return hit


@njit(cache=True)
def tuple_rows(ht, tuples, src_hi, src_lo, sport, dst_hi, dst_lo, dport):
    """Mask of the rows whose 4-tuple (either direction) is among ``tuples`` (slot-shaped rows
    indexed by the open-addressing table ``ht``, see ``assign.rebuild_table``)."""
    out = np.zeros(len(src_hi), np.bool_)
    mask = np.uint64(len(ht) - 1)
    for i in range(len(src_hi)):
        a_hi, a_lo, a_port, b_hi, b_lo, b_port, _ = A.canonical(
            np.uint64(src_hi[i]), np.uint64(src_lo[i]), np.int64(sport[i]),
            np.uint64(dst_hi[i]), np.uint64(dst_lo[i]), np.int64(dport[i]))
        j = A._slot_hash(a_hi, a_lo, a_port, b_hi, b_lo, b_port) & mask
        while ht[j] >= 0:
            s = ht[j]
            if tuples[s, A.S_A_LO] == np.int64(a_lo) and tuples[s, A.S_B_LO] == np.int64(b_lo) \
                    and tuples[s, A.S_A_PORT] == a_port and tuples[s, A.S_B_PORT] == b_port \
                    and tuples[s, A.S_A_HI] == np.int64(a_hi) \
                    and tuples[s, A.S_B_HI] == np.int64(b_hi):
                out[i] = True
                break
            j = (j + np.uint64(1)) & mask
    return out
