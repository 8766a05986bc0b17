"""The JSON report's connections, written as text by a compiled kernel.

A connection's entry is a fixed sequence of values, each after a literal label (``{"id":``,
``,"client_ip":`` …). Every value is either an integer (written by the kernel), a piece of
pre-made JSON text (each distinct string, each float as orjson writes it), or an endpoint's
timeline (its events, each ``{"ts":…,"frame":…`` — the time as exact decimal seconds — then
one of the few distinct ``,"state":…,"why":…}`` texts). Python prepares those texts once per
column, a column at a time; the kernel only copies bytes, so 100,000 connections with 850,000
timeline events take a fraction of a second and no object per value.
"""

from __future__ import annotations

import numpy as np
import orjson

from traceaudit.jit import cgutils, intrinsic, njit
from traceaudit.jit import types as nbt

INT = 0        # the column's value is an integer: written in decimal
TEXT = 1       # the column's value indexes a JSON text in the text table
TIMELINE = 2   # the column's value is an endpoint (0 client, 1 server): its timeline

_COMMA, _LBRACKET, _RBRACKET = 44, 91, 93
_NULL = np.frombuffer(b"null", np.uint8)
_TS = np.frombuffer(b'{"ts":', np.uint8)
_FRAME = np.frombuffer(b',"frame":', np.uint8)
_INT64_MIN = np.iinfo(np.int64).min
_INT64_MIN_DIGITS = np.frombuffer(b"9223372036854775808", np.uint8)
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


@njit(cache=True)
def _comma_separated(body, starts, ends):
    """Where each of the comma-separated texts in ``body`` starts and ends (one per element
    of ``starts`` and ``ends``). Allocates nothing: see ``tracking.timeline._corrected``."""
    k = 0
    starts[0] = 0
    for i in range(len(body)):
        if body[i] == _COMMA:
            ends[k] = i
            k += 1
            starts[k] = i + 1
    ends[k] = len(body)


@njit(inline="always")
def _put_int(out, pos, v):
    """Write integer ``v`` in decimal at ``pos``; returns the position after it."""
    if v < 0:
        out[pos] = 45
        pos += 1
        if v == _INT64_MIN:             # (its negation does not fit)
            return _put(out, pos, _INT64_MIN_DIGITS, 0, len(_INT64_MIN_DIGITS))
        v = -v
    n = 1
    t = v
    while t >= 10:
        t //= 10
        n += 1
    p = pos + n - 1
    while True:
        out[p] = 48 + v % 10
        v //= 10
        if v == 0:
            break
        p -= 1
    return pos + n


@njit(inline="always")
def _put_seconds(out, pos, ns):
    """Write a time in nanoseconds as exact decimal seconds: ``1700000000.123456`` (trailing
    zeros dropped, at least one fractional digit), as ``decimal_seconds`` does."""
    whole = ns // 1_000_000_000
    frac = ns % 1_000_000_000
    if ns < 0:
        out[pos] = 45
        pos += 1
        if frac:                        # -1.5 s: whole -2, frac 0.5 -> written 1.5
            whole += 1
            frac = 1_000_000_000 - frac
        whole = -whole
    pos = _put_int(out, pos, whole)
    out[pos] = 46
    pos += 1
    digits = 9
    if frac == 0:
        digits = 1
    while frac and frac % 10 == 0:
        frac //= 10
        digits -= 1
    for i in range(digits):
        out[pos + digits - 1 - i] = 48 + frac % 10
        frac //= 10
    return pos + digits


@intrinsic
def _memcpy(typingctx, dst, dst_pos, src, src_pos, n):
    """``dst[dst_pos:dst_pos + n] = src[src_pos:src_pos + n]`` for uint8 arrays, as one call
    to memcpy (no bounds checks). Writing the report's texts byte by byte in a loop took
    2.6 times as long: 0.116 s against 0.044 s for the 130 MB of 100,000 connections."""
    def codegen(context, builder, signature, args):
        d, dp, s, sp, count = args
        d_array = context.make_array(signature.args[0])(context, builder, d)
        s_array = context.make_array(signature.args[2])(context, builder, s)
        cgutils.raw_memcpy(builder, builder.gep(d_array.data, [dp]),
                           builder.gep(s_array.data, [sp]), count, 1)
        return context.get_dummy_value()
    return nbt.void(dst, dst_pos, src, src_pos, n), codegen


@njit(inline="always")
def _put(out, pos, buf, a, b):
    _memcpy(out, pos, buf, a, b - a)
    return pos + b - a


@njit(inline="always")
def _put_text(out, pos, buf, starts, ends, i):
    return _put(out, pos, buf, starts[i], ends[i])


@njit(cache=True)
def _rows(out, lo, hi, kinds, labels, label_offs, values, buf, starts, ends,
          ev_first, ev_ts, ev_frame, ev_tail, end):
    """Write the entries of rows lo .. hi-1, comma-separated, into ``out`` (large enough: no
    bounds are checked); returns the length written.

    ``values[r, k]``: row r's integer (INT) or text index (TEXT) for column k; a TIMELINE
    column writes endpoint e = ``values[r, k]``'s events ``ev_first[2r+e] .. ev_first[2r+e+1]``
    (time ``ev_ts`` in nanoseconds, frame ``ev_frame`` or null, text ``ev_tail``). ``end``
    closes each entry.
    """
    pos = 0
    for r in range(lo, hi):
        if r > lo:
            out[pos] = _COMMA
            pos += 1
        for k in range(len(kinds)):
            pos = _put(out, pos, labels, label_offs[k], label_offs[k + 1])
            kind = kinds[k]
            if kind == INT:
                pos = _put_int(out, pos, values[r, k])
            elif kind == TEXT:
                pos = _put_text(out, pos, buf, starts, ends, values[r, k])
            else:
                g = 2 * r + values[r, k]
                out[pos] = _LBRACKET
                pos += 1
                for j in range(ev_first[g], ev_first[g + 1]):
                    if j > ev_first[g]:
                        out[pos] = _COMMA
                        pos += 1
                    pos = _put(out, pos, _TS, 0, len(_TS))
                    pos = _put_seconds(out, pos, ev_ts[j])
                    pos = _put(out, pos, _FRAME, 0, len(_FRAME))
                    if ev_frame[j] >= 0:
                        pos = _put_int(out, pos, ev_frame[j])
                    else:
                        pos = _put(out, pos, _NULL, 0, 4)
                    pos = _put_text(out, pos, buf, starts, ends, ev_tail[j])
                out[pos] = _RBRACKET
                pos += 1
        pos = _put(out, pos, end, 0, len(end))
    return pos


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
        self.event_bound = (len(_TS) + _LONGEST_SECONDS + len(_FRAME) + _LONGEST_INT
                            + longest + 1)

    def chunk(self, lo: int, hi: int) -> memoryview:
        """The text as a view of the kernel's buffer (bytes-like; not copied again)."""
        ev_first = self.ev[0]
        events = int(ev_first[2 * hi] - ev_first[2 * lo])
        out = np.empty((hi - lo) * self.row_bound + events * self.event_bound, np.uint8)
        size = _rows(out, lo, hi, self.kinds, self.labels, self.label_offs, self.values,
                     self.buf, self.starts, self.ends, *self.ev, self.end)
        return memoryview(out)[:size]
