"""Spilled records of one capture, merged back in order of first frame.

Records are written to one unlinked temporary file in *segments*: each retirement sweep writes
its records grouped by bucket (``BUCKET_FRAMES`` consecutive first-frame numbers). At the end a
bucket's segments are read together and sorted, so reading back holds one bucket's rows at a
time, whatever the capture's length.
"""

from __future__ import annotations

import tempfile
from typing import Iterator

import numpy as np

from traceaudit.flows.columns import Coded, Columns, Repeated
from traceaudit.retire.records import FIELDS, Records, record_columns

BUCKET_FRAMES = 1 << 18


class SpilledTable:
    """A flow table kept on disk (``CaptureAnalysis.table`` of a retiring read)."""

    def __init__(self, capture: str, zeek: bool) -> None:
        self.capture = capture
        self.zeek = zeek
        self._file = tempfile.TemporaryFile(prefix="traceaudit-spill-")
        self._segments: list[tuple[int, int, int, bool]] = []   # bucket, offset, rows, repair
        self._end = 0
        self._rows = 0
        self._drop = None                # selects first-read rows to drop (repaired tuples)
        self._dropped = 0

    def append(self, records: Records, repair: bool = False) -> None:
        """Add records sorted by first frame (``repair``: rows of the filtered second read)."""
        if not len(records):
            return
        bucket = records["first_frame"] // BUCKET_FRAMES
        bounds = [0, *(np.flatnonzero(np.diff(bucket)) + 1).tolist(), len(records)]
        self._file.seek(self._end)
        for a, b in zip(bounds[:-1], bounds[1:]):
            data = np.ascontiguousarray(records.data[:, a:b]).tobytes()
            self._file.write(data)
            self._segments.append((int(bucket[a]), self._end, b - a, repair))
            self._end += len(data)
        self._rows += len(records)

    def drop_first_read(self, select) -> None:
        """Rows of the first read for which ``select(records)`` is True are replaced by the
        repair read's rows (appended with ``repair=True``)."""
        self._drop = select
        self._dropped = sum(int(select(part).sum()) for part, repair in self._read_all()
                            if not repair)

    def _read_all(self) -> Iterator[tuple[Records, bool]]:
        for _, offset, rows, repair in self._segments:
            yield self._read(offset, rows), repair

    def _read(self, offset: int, rows: int) -> Records:
        self._file.seek(offset)
        data = np.frombuffer(self._file.read(rows * 8 * len(FIELDS)), np.int64)
        return Records(data.reshape(len(FIELDS), rows))

    def __len__(self) -> int:
        return self._rows - self._dropped

    def chunks(self) -> Iterator[Columns]:
        """The rows in order of first frame, a bucket at a time, with their ids."""
        by_bucket: dict[int, list[tuple[int, int, bool]]] = {}
        for bucket, offset, rows, repair in self._segments:
            by_bucket.setdefault(bucket, []).append((offset, rows, repair))
        first_id = 0
        for bucket in sorted(by_bucket):
            parts = []
            for offset, rows, repair in by_bucket[bucket]:
                part = self._read(offset, rows)
                if self._drop is not None and not repair:
                    part = part.take(~self._drop(part))
                parts.append(part)
            rec = Records.concat(parts) if len(parts) > 1 else parts[0]
            first = rec["first_frame"]
            if len(first) > 1 and (first[1:] < first[:-1]).any():
                rec = rec.take(np.argsort(first, kind="stable"))
            if len(rec):
                yield record_columns(rec, self.capture, first_id, self.zeek)
                first_id += len(rec)

    def columns(self) -> Columns:
        """All rows as one in-memory table (the small formats: terminal table, JSON)."""
        chunks = list(self.chunks())
        if not chunks:
            return record_columns(Records.empty(), self.capture, 0, self.zeek)
        if len(chunks) == 1:
            return chunks[0]
        return Columns({name: _concat([c.data[name] for c in chunks]) for name in chunks[0].data},
                       sum(len(c) for c in chunks))

    def frame(self):
        return self.columns().frame()

    def close(self) -> None:
        self._file.close()

    def __getstate__(self) -> dict:
        # a table read in a worker process comes back whole (its records, ~100 bytes a
        # connection) and is spilled again on this side
        state = dict(self.__dict__)
        self._file.seek(0)
        state["_file"] = self._file.read(self._end)
        return state

    def __setstate__(self, state: dict) -> None:
        data = state.pop("_file")
        self.__dict__.update(state)
        self._file = tempfile.TemporaryFile(prefix="traceaudit-spill-")
        self._file.write(data)


def _concat(parts):
    first = parts[0]
    if isinstance(first, Repeated):
        return Repeated(first.value, sum(p.n for p in parts))
    if isinstance(first, Coded):
        if all(p.labels is first.labels for p in parts):     # a fixed set (state names ...)
            return Coded(np.concatenate([p.codes for p in parts]), first.labels)
        return np.concatenate([p.values() for p in parts])   # each chunk's own (addresses)
    return np.concatenate(parts)
