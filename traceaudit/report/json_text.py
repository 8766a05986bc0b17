"""The JSON report's connections, written as text by a compiled kernel.

A connection's entry is a fixed sequence of values, each after a literal label (``{"id":``,
``,"client_ip":`` …). Every value is either an integer (written by the kernel), a piece of
pre-made JSON text (each distinct string, each float as orjson writes it), or an endpoint's
timeline (its events, each ``{"ts":…,"frame":…`` — the time as exact decimal seconds — then
one of the few distinct ``,"state":…,"why":…}`` texts). Python prepares those texts once per
column, a column at a time; the kernel (``_json_text``) only copies bytes, so 100,000
connections with 850,000 timeline events take a fraction of a second and no object per value.
"""

from __future__ import annotations

import numpy as np
import orjson

# INT, TEXT, TIMELINE: the kinds of a column's values; the kernels copy bytes (TS, FRAME: the
# literal texts of a timeline's events)
from traceaudit.report._json_text import (FRAME, INT, TEXT, TIMELINE, TS,  # noqa: F401
                                          _comma_separated, _rows)

_LONGEST_INT = 20           # -9223372036854775808
_LONGEST_SECONDS = 31       # a sign, 19 whole digits at most, the point, 9 fractional digits


class TextTable:
    """JSON texts in one buffer: text ``i`` is ``buf[starts[i]:ends[i]]``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.bounds: list[tuple[np.ndarray, np.ndarray]] = []
        self.size = 0           # bytes so far
        self.n = 0              # texts so far

    def add_texts(self, texts: list[bytes]) -> int:
        """Append texts; returns the index of the first."""
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
        ends = np.cumsum(lengths)
        return self._add(b"".join(texts), ends - lengths, ends)

    def add_numbers(self, values: list) -> int:
        """Append numbers (or booleans, None) as orjson writes each inside any container;
        returns the index of the first."""
        if not values:
            return self.n
        body = orjson.dumps(values)[1:-1]      # numbers hold no commas of their own
        starts = np.empty(len(values), np.int64)
        ends = np.empty(len(values), np.int64)
        _comma_separated(np.frombuffer(body, np.uint8), starts, ends)
        return self._add(body, starts, ends)

    def _add(self, data: bytes, starts: np.ndarray, ends: np.ndarray) -> int:
        first = self.n
        self.parts.append(data)
        self.bounds.append((starts + self.size, ends + self.size))
        self.size += len(data)
        self.n += len(starts)
        return first

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(buffer, starts, ends)."""
        if not self.parts:
            return np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return (np.frombuffer(b"".join(self.parts), np.uint8),
                np.concatenate([b[0] for b in self.bounds]),
                np.concatenate([b[1] for b in self.bounds]))


class RowWriter:
    """The columns of one table, ready for the kernel: ``chunk(lo, hi)`` is the JSON text of
    rows lo .. hi-1 (entries separated by commas)."""

    def __init__(self, kinds: list[int], labels: list[bytes], values: np.ndarray,
                 table: TextTable, end: bytes,
                 ev_first: np.ndarray, ev_ts: np.ndarray, ev_frame: np.ndarray,
                 ev_tail: np.ndarray) -> None:
        self.kinds = np.array(kinds, np.int64)
        self.labels = np.frombuffer(b"".join(labels), np.uint8)
        self.label_offs = np.zeros(len(labels) + 1, np.int64)
        np.cumsum([len(x) for x in labels], out=self.label_offs[1:])
        self.values = np.ascontiguousarray(values.T)          # a row's values side by side
        self.buf, self.starts, self.ends = table.arrays()
        self.end = np.frombuffer(end, np.uint8)
        self.ev = (ev_first, ev_ts, ev_frame, ev_tail)
        # the most bytes a row (without its events) and an event can take, so one pass writes
        # into a buffer that is surely large enough (the kernel does not check bounds)
        longest = int((self.ends - self.starts).max()) if len(self.starts) else 0
        self.row_bound = (len(self.labels) + len(kinds) * max(_LONGEST_INT, longest)
                          + len(self.end) + 1)
        self.event_bound = (len(TS) + _LONGEST_SECONDS + len(FRAME) + _LONGEST_INT
                            + longest + 1)

    def chunk(self, lo: int, hi: int) -> memoryview:
        """The text as a view of the kernel's buffer (bytes-like; not copied again)."""
        ev_first = self.ev[0]
        events = int(ev_first[2 * hi] - ev_first[2 * lo])
        out = np.empty((hi - lo) * self.row_bound + events * self.event_bound, np.uint8)
        size = _rows(out, lo, hi, self.kinds, self.labels, self.label_offs, self.values,
                     self.buf, self.starts, self.ends, *self.ev, self.end)
        return memoryview(out)[:size]
