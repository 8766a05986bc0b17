"""Packet excerpts of a flat read (``analyze --html`` on a spilled capture): each retiring
connection's kept packets (``tracking/excerpts.py``: head, ring, evicted control packets) go
to a temporary file of their own, in buckets of first frames as the spill's records do; the
HTML report reads back only those of the connections its findings draw (``load``).

A segment holds k connections: a (k, 5) int64 header (first frame, packets seen, the two
sequence bases, pool rows), the slot arrays (k, SLOTS) field by field, then the pool rows
(P_CONN: the row within the segment). The repair read's segments are written after the first
read's, so where both hold a first frame the repair's (the later) one is read.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from traceaudit.flows import assign as A
from traceaudit.flows.table import FlowBuilder
from traceaudit.retire import spill, spill_files
from traceaudit.tracking.excerpts import (P_CONN, P_IDX, SLOTS, ExcerptRecorder, Excerpts,
                                          N_POOL)

_SLOT_FIELDS = ("frame", "ts", "seq", "ack", "len", "win", "flags")
_HEAD = 5           # first frame, count, base client, base server, pool rows
_PREFIX = "traceaudit-excerpts-"


class SpilledExcerpts:
    """Excerpts of the connections a flat read retired, on disk (``CaptureAnalysis.excerpts``
    of a flat read with ``--html``)."""

    def __init__(self) -> None:
        self._file = spill_files.new_file(_PREFIX)
        # per bucket, in the order written: (offset, rows, pool rows)
        self._segments: dict[int, list[tuple[int, int, int]]] = {}
        self._end = 0
        self._dtypes: dict[str, np.dtype] | None = None

    # -- writing ---------------------------------------------------------------------------
    def write(self, rows: np.ndarray, recorder: ExcerptRecorder, builder: FlowBuilder) -> None:
        """Spill the excerpts of builder rows ``rows`` (ascending), a segment per bucket."""
        if not len(rows):
            return
        conn = builder.conn
        first = conn[rows, A.F_FIRST_FRAME]
        order = np.argsort(first, kind="stable")
        rows, first = rows[order], first[order]
        head = np.empty((len(rows), _HEAD), np.int64)
        head[:, 0] = first
        head[:, 1] = recorder.count[rows]
        for d in (0, 1):
            known = conn[rows, A.F_BASE_SET + d] == 1
            head[:, 2 + d] = np.where(known, conn[rows, A.F_BASE + d], -1)
        head[:, 4] = recorder.pool_count[rows]
        pool = recorder.pool[:recorder.n_pool]
        local = np.full(max(len(recorder.count), 1), -1, np.int64)
        local[rows] = np.arange(len(rows))
        mine = pool[local[pool[:, P_CONN]] >= 0] if len(pool) else pool
        mine = mine.copy()
        mine[:, P_CONN] = local[mine[:, P_CONN]]
        mine = mine[np.lexsort((mine[:, P_IDX], mine[:, P_CONN]))]
        slots = {f: recorder.slots[f][rows] for f in _SLOT_FIELDS}
        if self._dtypes is None:
            self._dtypes = {f: a.dtype for f, a in slots.items()}
        bucket = first // spill.BUCKET_FRAMES
        bounds = [0, *(np.flatnonzero(np.diff(bucket)) + 1).tolist(), len(rows)]
        pool_bounds = np.searchsorted(mine[:, P_CONN], bounds).tolist()
        self._file.seek(self._end)
        for (a, b), (pa, pb) in zip(zip(bounds[:-1], bounds[1:]),
                                    zip(pool_bounds[:-1], pool_bounds[1:])):
            p = mine[pa:pb].copy()
            p[:, P_CONN] -= a
            size = self._file.write(np.ascontiguousarray(head[a:b]))
            for f in _SLOT_FIELDS:
                size += self._file.write(np.ascontiguousarray(slots[f][a:b]))
            size += self._file.write(np.ascontiguousarray(p))
            self._segments.setdefault(int(bucket[a]), []).append((self._end, b - a, pb - pa))
            self._end += size

    # -- reading ---------------------------------------------------------------------------
    def load(self, first_frames: Iterable[int]) -> Excerpts:
        """The excerpts of the connections with these first frames, as an ``Excerpts`` whose
        row i is the i-th of them (a first frame not spilled: no packets)."""
        wanted = np.asarray(list(first_frames), np.int64)
        n = len(wanted)
        count = np.zeros(n, np.int64)
        base = np.full((n, 2), -1, np.int64)
        slots = {f: np.zeros((n, SLOTS), self._dtypes[f] if self._dtypes else np.int64)
                 for f in _SLOT_FIELDS}
        pools: list[np.ndarray] = []
        buckets = wanted // spill.BUCKET_FRAMES
        by_bucket = np.argsort(buckets, kind="stable")
        bounds = np.flatnonzero(np.diff(buckets[by_bucket])) + 1
        for ix in np.split(by_bucket, bounds) if n else ():
            mine = []                           # this bucket's pool rows (P_CONN: result row)
            frames = wanted[ix]
            for offset, rows, n_pool in self._segments.get(int(buckets[ix[0]]), ()):
                head, seg_slots, pool = self._read(offset, rows, n_pool)
                # (later segments overwrite earlier ones: the repair read's rows win)
                at = np.minimum(np.searchsorted(head[:, 0], frames), rows - 1)
                found = head[at, 0] == frames
                hit, src = ix[found], at[found]
                if not len(hit):
                    continue
                count[hit] = head[src, 1]
                base[hit] = head[src, 2:4]
                for f in _SLOT_FIELDS:
                    slots[f][hit] = seg_slots[f][src]
                mine = [p[~np.isin(p[:, P_CONN], hit)] for p in mine]
                target = np.full(rows, -1, np.int64)
                target[src] = hit
                p = pool[target[pool[:, P_CONN]] >= 0]
                p[:, P_CONN] = target[p[:, P_CONN]]
                mine.append(p)
            pools += mine
        pool = np.concatenate(pools) if pools else np.zeros((0, N_POOL), np.int64)
        pool = pool[np.lexsort((pool[:, P_IDX], pool[:, P_CONN]))]
        starts = np.searchsorted(pool[:, P_CONN], np.arange(n + 1))
        return Excerpts(count, slots, pool, starts, base)

    def _read(self, offset: int, rows: int, n_pool: int):
        self._file.seek(offset)
        head = np.frombuffer(self._file.read(rows * _HEAD * 8), np.int64).reshape(rows, _HEAD)
        slots = {}
        for f in _SLOT_FIELDS:
            dt = self._dtypes[f]
            slots[f] = np.frombuffer(self._file.read(rows * SLOTS * dt.itemsize),
                                     dt).reshape(rows, SLOTS)
        pool = np.frombuffer(self._file.read(n_pool * N_POOL * 8), np.int64).reshape(
            n_pool, N_POOL).copy()
        return head, slots, pool

    @property
    def size(self) -> int:
        """Bytes written."""
        return self._end

    def close(self) -> None:
        self._file.close()

    def __getstate__(self) -> dict:
        # (read in a worker process: it comes back as its file, ``spill_files``)
        return {**self.__dict__, "_file": spill_files.sent(self._file, self._end)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._file = spill_files.received(state["_file"], _PREFIX)


class ExcerptRetirer:
    """The flat read's excerpt recorder kept in step with retirement (``sweep.Retirer``):
    retiring rows' excerpts are spilled, and the recorder's rows compacted exactly as
    ``sweep._compact`` compacts the flow table's."""

    def __init__(self, recorder: ExcerptRecorder) -> None:
        self.recorder = recorder
        self.spilled = SpilledExcerpts()

    def retire(self, retire: np.ndarray, builder: FlowBuilder) -> None:
        """Before ``sweep._compact``: spill rows ``retire`` (a mask of live rows), then move
        the live rows beyond the kept count into the retired rows' places, as it does."""
        rec = self.recorder
        from traceaudit.retire.sweep import live_moves
        self.spilled.write(np.flatnonzero(retire), rec, builder)
        n = len(retire)
        k, holes, movers, new = live_moves(retire)
        rec.count[holes] = rec.count[movers]
        rec.pool_count[holes] = rec.pool_count[movers]
        for arr in rec.slots.values():
            arr[holes] = arr[movers]
        rec.count[k:n] = 0
        rec.pool_count[k:n] = 0
        pool = rec.pool[:rec.n_pool]
        keep = new[pool[:, P_CONN]] >= 0
        kept = pool[keep]
        kept[:, P_CONN] = new[kept[:, P_CONN]]
        rec.n_pool = len(kept)
        rec.pool[:rec.n_pool] = kept

    def finish(self, builder: FlowBuilder, recorder: ExcerptRecorder | None = None) -> None:
        """Capture end (or the repair read's end, with its ``recorder``): every row left."""
        rec = recorder if recorder is not None else self.recorder
        self.spilled.write(np.arange(builder.n_conns), rec, builder)
