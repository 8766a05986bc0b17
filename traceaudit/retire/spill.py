"""Spilled records of one capture, merged back in order of first frame.

Records are written to one unlinked temporary file in *segments*: each retirement sweep writes
its records grouped by bucket (``BUCKET_FRAMES`` consecutive first-frame numbers). At the end a
bucket's segments are read together and sorted, so reading back holds one bucket's rows at a
time, whatever the capture's length.

A table spilled ``with_facts`` (``traceaudit analyze``'s flat read) keeps beside each record
the connection's tracker facts and corrected timeline, so that the rules and the JSON report
read them back a bucket at a time (``Finished``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from traceaudit.flows.columns import Coded, Columns, Repeated
from traceaudit.retire import spill_files
from traceaudit.retire.records import CODED, FIELDS, Records, record_columns
from traceaudit.tracking.connections import CODED_LABELS
from traceaudit.tracking.facts import conn_table, endpoint_table
from traceaudit.tracking.tracker import EV_CONN

BUCKET_FRAMES = 1 << 18
_PREFIX = "traceaudit-spill-"
_EV_COLS = 6
_ENDS_BYTES = endpoint_table(0).dtype.itemsize * 2     # a connection's two endpoints
_CONN_BYTES = conn_table(0).dtype.itemsize


@dataclass
class Finished:
    """Finished connections in order of first frame, with what the rules read of them: tracker
    facts (``prev``: the previous incarnation's *first frame*, -1 when none) and corrected
    events (``EV_CONN``: the row here)."""

    records: Records
    ends: np.ndarray            # (k, 2) endpoint facts
    conns: np.ndarray           # (k,) connection facts
    events: np.ndarray          # (m, 6), sorted by row, endpoint, time

    def __len__(self) -> int:
        return len(self.records)

    def take(self, rows: np.ndarray) -> "Finished":
        """Rows ``rows`` (in any order: each row's events follow it, in their order)."""
        counts = np.bincount(self.events[:, EV_CONN], minlength=len(self))
        starts = np.cumsum(counts) - counts
        lens = counts[rows]
        # each kept row's events, in the new row order: a run of consecutive event rows each
        shift = np.repeat(starts[rows] - (np.cumsum(lens) - lens), lens)
        ev = self.events[shift + np.arange(len(shift))]
        ev[:, EV_CONN] = np.repeat(np.arange(len(rows)), lens)
        if not len(self.ends):                      # (read without facts)
            return Finished(self.records.take(rows), self.ends, self.conns, ev)
        return Finished(self.records.take(rows), take_facts(self.ends, rows),
                        take_facts(self.conns, rows), ev)

    @staticmethod
    def concat(parts: list["Finished"]) -> "Finished":
        base = np.cumsum([0] + [len(p) for p in parts[:-1]])
        events = np.concatenate([p.events for p in parts])
        events[:, EV_CONN] += np.repeat(base, [len(p.events) for p in parts])
        return Finished(Records.concat([p.records for p in parts]),
                        _concat_facts([p.ends for p in parts]),
                        _concat_facts([p.conns for p in parts]), events)


def fact_words(facts: np.ndarray) -> np.ndarray:
    """Facts (every field an int64) as a plain (rows, words) int64 matrix: NumPy copies
    structured records one field at a time, plain rows at memory speed."""
    words = facts.dtype.itemsize // 8 * int(np.prod(facts.shape[1:]))
    return facts.view(np.int64).reshape(len(facts), words)


def take_facts(facts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of a facts table (a copy, gathered as plain int64 rows)."""
    return fact_words(facts)[rows].view(facts.dtype).reshape((len(rows),) + facts.shape[1:])


def _concat_facts(parts: list[np.ndarray]) -> np.ndarray:
    first = parts[0]
    return np.concatenate([fact_words(p) for p in parts]).view(first.dtype).reshape(
        (-1,) + first.shape[1:])


def _write_segment(file, rows: Finished, a: int, b: int,
                   ev_bounds: list[int] | None = None) -> int:
    """Write rows a..b (their events: ``ev_bounds``, else all) as a segment: records, both
    endpoints' facts, connection facts, events (``EV_CONN`` counted from row a); bytes."""
    ev = rows.events if ev_bounds is None else rows.events[ev_bounds[0]:ev_bounds[1]]
    if a:
        ev = ev.copy()
        ev[:, EV_CONN] -= a
    size = 0
    for data in (rows.records.data[:, a:b], rows.ends[a:b], rows.conns[a:b], ev):
        size += file.write(np.ascontiguousarray(data))
    return size


class SpilledTable:
    """A flow table kept on disk (``CaptureAnalysis.table`` of a retiring read)."""

    def __init__(self, capture: str, zeek: bool, with_facts: bool = False) -> None:
        self.capture = capture
        self.zeek = zeek
        self.with_facts = with_facts
        self._file = spill_files.new_file(_PREFIX)
        # bucket, offset, rows, repair, events (with_facts: facts and events follow the records)
        self._segments: list[tuple[int, int, int, bool, int]] = []
        self._end = 0
        self._rows = 0
        self._drop = None                # selects first-read rows to drop (repaired tuples)
        self._dropped = 0
        # ids of the connections findings name (the flat read's rules add them, a chunk at a
        # time): ``endpoint_texts`` reads their endpoints back for the CI reports
        self.named_ids: list[np.ndarray] = []
        self._endpoint_texts: dict[int, tuple[str, str]] | None = None
        self._sorted = False            # a bucket a segment, sorted (``finished``)
        self._code_counts: dict[str, np.ndarray] = {}    # (written when it is)

    def append(self, records: Records | Finished, repair: bool = False) -> None:
        """Add records (``with_facts``: ``Finished`` rows) sorted by first frame (``repair``:
        rows of the filtered second read)."""
        finished = records if isinstance(records, Finished) else None
        if finished is not None:
            records = finished.records
        if not len(records):
            return
        bucket = records["first_frame"] // BUCKET_FRAMES
        bounds = [0, *(np.flatnonzero(np.diff(bucket)) + 1).tolist(), len(records)]
        if finished is not None:
            ev_bounds = np.searchsorted(finished.events[:, EV_CONN], bounds).tolist()
        self._file.seek(self._end)
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            if finished is not None:
                size = _write_segment(self._file, finished, a, b, ev_bounds[i:i + 2])
                n_ev = ev_bounds[i + 1] - ev_bounds[i]
            else:
                size = self._file.write(np.ascontiguousarray(records.data[:, a:b]))
                n_ev = 0
            self._segments.append((int(bucket[a]), self._end, b - a, repair, n_ev))
            self._end += size
        self._rows += len(records)

    def drop_first_read(self, select) -> None:
        """Rows of the first read for which ``select(records)`` is True are replaced by the
        repair read's rows (appended with ``repair=True``)."""
        self._drop = select
        self._dropped = sum(int(select(part).sum()) for part, repair in self._read_all()
                            if not repair)

    def _read_all(self) -> Iterator[tuple[Records, bool]]:
        for _, offset, rows, repair, _ in self._segments:
            yield self._read(offset, rows), repair

    def _read(self, offset: int, rows: int) -> Records:
        self._file.seek(offset)
        data = np.frombuffer(self._file.read(rows * 8 * len(FIELDS)), np.int64)
        return Records(data.reshape(len(FIELDS), rows))

    def __len__(self) -> int:
        return self._rows - self._dropped

    def _read_finished(self, offset: int, rows: int, n_ev: int, facts: bool) -> Finished:
        sizes = [rows * 8 * len(FIELDS), rows * _ENDS_BYTES, rows * _CONN_BYTES,
                 n_ev * _EV_COLS * 8]
        if not facts:               # records and events only (the JSON report): no facts
            sizes[1] = sizes[2] = 0
        # (not zeroed first: read into; the arrays are writable views of it)
        data = np.empty(sum(sizes), np.uint8)
        self._file.seek(offset)
        self._file.readinto(memoryview(data[:sizes[0]]))
        if not facts:
            self._file.seek(rows * (_ENDS_BYTES + _CONN_BYTES), 1)
        self._file.readinto(memoryview(data[sizes[0]:]))
        at = np.cumsum([0] + sizes).tolist()
        part = [data[a:b] for a, b in zip(at[:-1], at[1:])]
        return Finished(Records(part[0].view(np.int64).reshape(len(FIELDS), rows)),
                        part[1].view(endpoint_table(0).dtype).reshape(-1, 2),
                        part[2].view(conn_table(0).dtype),
                        part[3].view(np.int64).reshape(n_ev, _EV_COLS))

    def finished(self, facts: bool = True) -> Iterator[tuple[int, Finished]]:
        """(first id, rows) a bucket at a time in order of first frame (``with_facts``; not
        ``facts``: their tracker facts left out, empty).

        The first read with facts that goes to the end also writes each bucket, sorted, as
        one segment of a new file, which then replaces the spill: later reads (the rules'
        second pass, the JSON report) read each bucket at once, with nothing to merge."""
        assert self.with_facts
        rewrite = facts and not self._sorted
        if rewrite:
            out = spill_files.new_file(_PREFIX)
            segments: list[tuple[int, int, int, bool, int]] = []
            end = 0
            counts = {name: np.zeros(len(CODED_LABELS[name]), np.int64) for name in CODED}
        for first_id, parts in self._buckets(
                lambda o, r, e: self._read_finished(o, r, e, facts)):
            rows = Finished.concat(parts) if len(parts) > 1 else parts[0]
            first = rows.records["first_frame"]
            if len(first) > 1 and (first[1:] < first[:-1]).any():
                rows = rows.take(np.argsort(first, kind="stable"))
            if rewrite:
                size = _write_segment(out, rows, 0, len(rows))
                segments.append((len(segments), end, len(rows), False, len(rows.events)))
                end += size
                for name, n in counts.items():
                    n += np.bincount(rows.records[name], minlength=len(n))
            yield first_id, rows
        if rewrite:                     # (a read left unfinished keeps the first file)
            self._file.close()
            self._file, self._segments, self._end = out, segments, end
            self._rows, self._drop, self._dropped = sum(s[2] for s in segments), None, 0
            self._sorted = True
            self._code_counts = counts

    def _buckets(self, read) -> Iterator[tuple[int, list]]:
        """Per bucket in order: (id of its first row, its parts as ``read`` gives them, the
        first read's rows of repaired 4-tuples left out)."""
        by_bucket: dict[int, list[tuple[int, int, bool, int]]] = {}
        for bucket, offset, rows, repair, n_ev in self._segments:
            by_bucket.setdefault(bucket, []).append((offset, rows, repair, n_ev))
        first_id = 0
        for bucket in sorted(by_bucket):
            parts = []
            for offset, rows, repair, n_ev in by_bucket[bucket]:
                part = read(offset, rows, n_ev)
                if self._drop is not None and not repair:
                    records = part if isinstance(part, Records) else part.records
                    part = part.take(np.flatnonzero(~self._drop(records)))
                if len(part):
                    parts.append(part)
            if parts:
                yield first_id, parts
                first_id += sum(len(p) for p in parts)

    def records(self) -> Iterator[Records]:
        """The rows a bucket at a time, in order of buckets (not yet sorted within one), the
        first read's rows of repaired 4-tuples left out: what ``of_records`` takes."""
        assert not self.with_facts
        for _, parts in self._buckets(lambda o, r, e: self._read(o, r)):
            yield Records.concat(parts) if len(parts) > 1 else parts[0]

    @classmethod
    def of_records(cls, capture: str, zeek: bool, parts: Iterator[Records]) -> "SpilledTable":
        """A table (without facts) holding ``parts``, as another process's ``records()``
        gave them (``parallel.arrow_results``)."""
        table = cls(capture, zeek)
        for part in parts:
            table.append(part)
        return table

    def chunks(self) -> Iterator[Columns]:
        """The rows in order of first frame, a bucket at a time, with their ids."""
        for first_id, parts in self._buckets(lambda o, r, e: self._read(o, r)):
            rec = Records.concat(parts) if len(parts) > 1 else parts[0]
            first = rec["first_frame"]
            if len(first) > 1 and (first[1:] < first[:-1]).any():
                rec = rec.take(np.argsort(first, kind="stable"))
            yield record_columns(rec, self.capture, first_id, self.zeek)

    def columns(self) -> Columns:
        """All rows as one in-memory table (the small formats: terminal table, JSON)."""
        chunks = list(self.chunks())
        if not chunks:
            return record_columns(Records.empty(), self.capture, 0, self.zeek)
        return concat_columns(chunks)

    def endpoint_texts(self) -> dict[int, tuple[str, str]]:
        """Connection id -> (client, server) "ip:port", IPv6 in brackets, of the connections
        in ``named_ids`` (``ci_common.endpoints``)."""
        if self._endpoint_texts is None:
            from traceaudit.report.ci_common import hostport
            named = np.unique(np.concatenate(self.named_ids)) if self.named_ids else \
                np.zeros(0, np.int64)
            texts = {}
            for chunk in self.chunks() if len(named) else ():
                ids = chunk["id"]
                rows = np.flatnonzero(np.isin(ids, named))
                cols = [chunk[c][rows].tolist() for c in ("id", "client_ip", "client_port",
                                                          "server_ip", "server_port")]
                for i, ci, cp, si, sp in zip(*cols):
                    texts[int(i)] = (hostport(ci, cp), hostport(si, sp))
            self._endpoint_texts = texts
        return self._endpoint_texts

    @property
    def size(self) -> int:
        """Bytes written to the spill file."""
        return self._end

    def frame(self):
        return self.columns().frame()

    def value_counts(self, name: str) -> dict:
        """``Columns.value_counts`` of a coded column (close_role, ...), a bucket at a time
        (or as counted when the spill was sorted)."""
        if name in self._code_counts:
            return {label: int(k) for label, k in zip(CODED_LABELS[name].tolist(),
                                                      self._code_counts[name].tolist()) if k}
        counts, labels = None, None
        for chunk in self.chunks():
            column = chunk.column(name)
            part = np.bincount(column.codes, minlength=len(column.labels))
            counts = part if counts is None else counts + part
            labels = column.labels
        if counts is None:
            return {}
        return {label: int(k) for label, k in zip(labels.tolist(), counts.tolist()) if k}

    def close(self) -> None:
        self._file.close()

    def __getstate__(self) -> dict:
        # a table read in a worker process comes back as its file (``spill_files``)
        return {**self.__dict__, "_file": spill_files.sent(self._file, self._end)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._file = spill_files.received(state["_file"], _PREFIX)


def concat_columns(chunks: list[Columns]) -> Columns:
    """Consecutive chunks of one table as one."""
    if len(chunks) == 1:
        return chunks[0]
    return Columns({name: _concat([c.data[name] for c in chunks]) for name in chunks[0].data},
                   sum(len(c) for c in chunks))


def _concat(parts):
    first = parts[0]
    if isinstance(first, Repeated):
        return Repeated(first.value, sum(p.n for p in parts))
    if isinstance(first, Coded):
        if all(p.labels is first.labels for p in parts):     # a fixed set (state names ...)
            return Coded(np.concatenate([p.codes for p in parts]), first.labels)
        return np.concatenate([p.values() for p in parts])   # each chunk's own (addresses)
    return np.concatenate(parts)
