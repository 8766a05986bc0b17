"""Packet excerpts: a few packets of every connection, kept while streaming, for the ladders.

A report never re-reads a capture, so the pipeline keeps, per connection, its first ``HEAD``
packets (the handshake), a ring of its last ``RING`` packets, and up to ``POOL_MAX`` SYN, FIN
or RST packets that fell out of the ring. Every packet keeps its ordinal within the connection,
so a ladder can say how many packets it skipped between two kept ones. Fixed-size slot arrays
(36 bytes a packet) hold head and ring; the rare evicted control packets go to a shared pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traceaudit.capture.batch import PacketBatch
from traceaudit.flows import assign as A
from traceaudit.flows.table import Assignment, FlowBuilder

# The layout, declared once in _excerpts.pxd for the compiled kernel (``record_batch``):
# HEAD first packets of a connection (SYN, SYN-ACK, ACK), a RING of its last packets (SLOTS in
# all), up to POOL_MAX control packets per connection kept after they left the ring, the
# FROM_SERVER bit added to the stored flags of a packet the server sent, and the pool's
# columns (int64 matrix, one row per evicted control packet).
from traceaudit.tracking._excerpts import (FROM_SERVER, HEAD, N_POOL, P_ACK,  # noqa: F401
                                           P_CONN, P_FLAGS, P_FRAME, P_IDX, P_LEN, P_SEQ, P_TS,
                                           P_WIN, POOL_MAX, RING, SLOTS, record_batch)


@dataclass(frozen=True)
class Packet:
    """One kept packet, as a ladder draws it."""

    idx: int              # ordinal within the connection (0 = its first packet)
    frame: int
    ts_ns: int
    from_server: bool
    flags: int            # the nine TCP flag bits
    seq: int              # raw
    ack: int
    rel_seq: int          # relative to the sender's ISN (as Wireshark shows it)
    rel_ack: int          # relative to the peer's ISN
    payload_len: int
    win: int


_SLOT_FIELDS = ("frame", "ts", "seq", "ack", "len", "win", "flags")


@dataclass
class Excerpts:
    """Kept packets of every connection of one capture (see module doc)."""

    count: np.ndarray           # (n,) packets each connection had
    slots: dict[str, np.ndarray]   # _SLOT_FIELDS -> (n, SLOTS) arrays
    pool: np.ndarray            # (m, N_POOL) int64, sorted by (conn, idx)
    pool_start: np.ndarray      # (n + 1,) rows of connection c: pool_start[c]:pool_start[c+1]
    base: np.ndarray            # (n, 2) sequence base of client, server (raw); -1 unknown

    @property
    def nbytes(self) -> int:
        arrays = [self.count, self.pool, self.pool_start, self.base, *self.slots.values()]
        return sum(a.nbytes for a in arrays)

    def packets(self, c: int) -> list[Packet]:
        """Connection ``c``'s kept packets in capture order."""
        n = int(self.count[c])
        # (this connection's slots as lists first: one NumPy read per field, not per packet)
        frame, ts, seq, ack, plen, win, flags = (self.slots[f][c].tolist() for f in (
            "frame", "ts", "seq", "ack", "len", "win", "flags"))
        rows = []
        for k in list(range(min(n, HEAD))) + list(range(max(HEAD, n - RING), n)):
            j = k if k < HEAD else HEAD + (k - HEAD) % RING
            rows.append((k, frame[j], ts[j], seq[j], ack[j], plen[j], win[j], flags[j]))
        for r in self.pool[self.pool_start[c]:self.pool_start[c + 1]].tolist():
            rows.append((r[P_IDX], r[P_FRAME], r[P_TS], r[P_SEQ], r[P_ACK], r[P_LEN], r[P_WIN],
                         r[P_FLAGS]))
        rows.sort()
        base = self.base[c].tolist()
        return [self._packet(base, *r) for r in rows]

    @staticmethod
    def _packet(base, idx, frame, ts, seq, ack, plen, win, flags) -> Packet:
        srv = bool(flags & FROM_SERVER)
        own, peer = base[int(srv)], base[1 - int(srv)]
        rel_seq = (seq - own) & 0xFFFFFFFF if own >= 0 else seq
        rel_ack = (ack - peer) & 0xFFFFFFFF if peer >= 0 else ack
        return Packet(idx, frame, ts, srv, flags & 0x1FF, seq, ack, rel_seq, rel_ack, plen, win)


class ExcerptRecorder:
    """Feeds each batch, after flow assignment, through ``record_batch``."""

    def __init__(self, initial: int = 1 << 12) -> None:
        self.count = np.zeros(initial, np.int64)
        self.slots = _slot_arrays(initial)
        self.pool = np.zeros((1 << 10, N_POOL), np.int64)
        self.n_pool = 0
        self.pool_count = np.zeros(initial, np.int32)

    def add(self, batch: PacketBatch, assignment: Assignment, flows: FlowBuilder) -> None:
        if flows.n_conns > len(self.count):
            self._grow(max(flows.n_conns, len(self.count) * 3 // 2))
        b = batch.columns
        s = self.slots
        from_client = assignment.from_client.view(np.uint8)     # (bool, as the kernel takes it)
        row = 0
        while True:
            self.n_pool, row = record_batch(
                assignment.conn, from_client, b["flags"], b["seq"], b["ack"], b["payload_len"],
                b["win"], b["ts_ns"], b["frame"], self.count, s["frame"], s["ts"], s["seq"],
                s["ack"], s["len"], s["win"], s["flags"], self.pool, self.n_pool,
                self.pool_count, row)
            if row >= len(batch):
                return
            grown = np.zeros((2 * len(self.pool), N_POOL), np.int64)
            grown[:self.n_pool] = self.pool[:self.n_pool]
            self.pool = grown

    def _grow(self, size: int) -> None:
        n = len(self.count)
        self.count = np.concatenate([self.count, np.zeros(size - n, np.int64)])
        self.pool_count = np.concatenate([self.pool_count, np.zeros(size - n, np.int32)])
        for name, arr in self.slots.items():
            grown = np.zeros((size, SLOTS), arr.dtype)
            grown[:n] = arr
            self.slots[name] = grown

    def finish(self, flows: FlowBuilder) -> Excerpts:
        """The excerpts, trimmed to the connections seen, with each direction's sequence base
        (Wireshark's base_seq, so relative numbers are the ones Wireshark shows)."""
        n_conns = flows.n_conns
        pool = self.pool[:self.n_pool]
        pool = pool[np.lexsort((pool[:, P_IDX], pool[:, P_CONN]))]
        starts = np.searchsorted(pool[:, P_CONN], np.arange(n_conns + 1))
        base = np.full((n_conns, 2), -1, np.int64)
        conn = flows.conn[:n_conns]
        for d in (0, 1):
            known = conn[:, A.F_BASE_SET + d] == 1
            base[known, d] = conn[known, A.F_BASE + d]
        slots = {k: v[:n_conns].copy() for k, v in self.slots.items()}
        return Excerpts(self.count[:n_conns].copy(), slots, pool.copy(), starts, base)


def _slot_arrays(n: int) -> dict[str, np.ndarray]:
    dtypes = (np.int64, np.int64, np.uint32, np.uint32, np.int32, np.uint16, np.uint16)
    return {k: np.zeros((n, SLOTS), d) for k, d in zip(_SLOT_FIELDS, dtypes)}
