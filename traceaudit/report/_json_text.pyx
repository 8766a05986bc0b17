"""Compiled kernels of ``traceaudit.report.json_text``: they only copy bytes and write integers
and times in decimal (see that module)."""

cimport cython
from libc.stdint cimport INT64_MIN, int64_t, uint8_t
from libc.string cimport memcpy

import numpy as np

# The kind of a column's values (``json_text`` re-exports these).
cpdef enum:
    INT = 0        # the column's value is an integer: written in decimal
    TEXT = 1       # the column's value indexes a JSON text in the text table
    TIMELINE = 2   # the column's value is an endpoint (0 client, 1 server): its timeline

cdef enum:
    _COMMA = 44
    _MINUS = 45
    _POINT = 46
    _ZERO = 48
    _LBRACKET = 91
    _RBRACKET = 93

#: the literal texts of a timeline's events (``json_text`` sizes its buffers from them)
TS = b'{"ts":'
FRAME = b',"frame":'
cdef const uint8_t[::1] _TS = np.frombuffer(TS, np.uint8)
cdef const uint8_t[::1] _FRAME = np.frombuffer(FRAME, np.uint8)
cdef const uint8_t[::1] _NULL = np.frombuffer(b"null", np.uint8)
cdef const uint8_t[::1] _INT64_MIN_DIGITS = np.frombuffer(b"9223372036854775808", np.uint8)



def _comma_separated(const uint8_t[::1] body, int64_t[::1] starts, int64_t[::1] ends):
    """Where each of the comma-separated texts in ``body`` starts and ends (one per element
    of ``starts`` and ``ends``)."""
    cdef Py_ssize_t k = 0
    cdef Py_ssize_t i
    cdef Py_ssize_t n = body.shape[0]
    with nogil:
        starts[0] = 0
        for i in range(n):
            if body[i] == _COMMA:
                ends[k] = i
                k += 1
                starts[k] = i + 1
        ends[k] = n


@cython.cdivision(True)
cdef inline Py_ssize_t _put_digits(uint8_t[::1] out, Py_ssize_t pos, int64_t v) noexcept nogil:
    """Write ``v >= 0`` in decimal at ``pos``; returns the position after it. (C's division
    equals Python's for these non-negative operands.)"""
    cdef Py_ssize_t n = 1
    cdef Py_ssize_t p
    cdef int64_t t = v
    while t >= 10:
        t //= 10
        n += 1
    p = pos + n - 1
    while True:
        out[p] = <uint8_t>(_ZERO + v % 10)
        v //= 10
        if v == 0:
            break
        p -= 1
    return pos + n


cdef inline Py_ssize_t _put_int(uint8_t[::1] out, Py_ssize_t pos, int64_t v) noexcept nogil:
    """Write integer ``v`` in decimal at ``pos``; returns the position after it."""
    if v < 0:
        out[pos] = _MINUS
        pos += 1
        if v == INT64_MIN:              # (its negation does not fit)
            return _put(out, pos, _INT64_MIN_DIGITS, 0, _INT64_MIN_DIGITS.shape[0])
        v = -v
    return _put_digits(out, pos, v)


@cython.cdivision(True)
cdef inline Py_ssize_t _put_fraction(uint8_t[::1] out, Py_ssize_t pos,
                                     int64_t frac) noexcept nogil:
    """Write the nanoseconds ``0 <= frac < 10**9`` as decimal digits after the point, trailing
    zeros dropped, at least one digit. (C's division equals Python's for these non-negative
    operands.)"""
    cdef Py_ssize_t digits = 9
    cdef Py_ssize_t i
    if frac == 0:
        digits = 1
    while frac and frac % 10 == 0:
        frac //= 10
        digits -= 1
    for i in range(digits):
        out[pos + digits - 1 - i] = <uint8_t>(_ZERO + frac % 10)
        frac //= 10
    return pos + digits


cdef inline Py_ssize_t _put_seconds(uint8_t[::1] out, Py_ssize_t pos, int64_t ns) noexcept nogil:
    """Write a time in nanoseconds as exact decimal seconds: ``1700000000.123456`` (trailing
    zeros dropped, at least one fractional digit), as ``decimal_seconds`` does."""
    # (floored division and remainder, as in Python: cdivision is off here)
    cdef int64_t whole = ns // 1_000_000_000
    cdef int64_t frac = ns % 1_000_000_000
    if ns < 0:
        out[pos] = _MINUS
        pos += 1
        if frac:                        # -1.5 s: whole -2, frac 0.5 -> written 1.5
            whole += 1
            frac = 1_000_000_000 - frac
        whole = -whole
    pos = _put_int(out, pos, whole)
    out[pos] = _POINT
    pos += 1
    return _put_fraction(out, pos, frac)


cdef inline Py_ssize_t _put(uint8_t[::1] out, Py_ssize_t pos, const uint8_t[::1] buf,
                            Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """``out[pos:pos + b - a] = buf[a:b]`` as one memcpy (writing the report's texts byte by
    byte in a loop took 2.6 times as long: 0.116 s against 0.044 s for the 130 MB of 100,000
    connections); returns the position after it. (Only the first byte of each side is
    bounds-checked in a bounds-checked build; an empty copy touches neither.)"""
    if b > a:
        memcpy(&out[pos], &buf[a], b - a)
    return pos + b - a


cdef inline Py_ssize_t _put_text(uint8_t[::1] out, Py_ssize_t pos, const uint8_t[::1] buf,
                                 const int64_t[::1] starts, const int64_t[::1] ends,
                                 int64_t i) noexcept nogil:
    return _put(out, pos, buf, starts[i], ends[i])


def _rows(uint8_t[::1] out, Py_ssize_t lo, Py_ssize_t hi, const int64_t[::1] kinds,
          const uint8_t[::1] labels, const int64_t[::1] label_offs,
          const int64_t[:, ::1] values, const uint8_t[::1] buf, const int64_t[::1] starts,
          const int64_t[::1] ends, const int64_t[::1] ev_first, const int64_t[:] ev_ts,
          const int64_t[:] ev_frame, const int64_t[::1] ev_tail, const uint8_t[::1] end):
    """Write the entries of rows lo .. hi-1, comma-separated, into ``out`` (large enough: no
    bounds are checked); returns the length written.

    ``values[r, k]``: row r's integer (INT) or text index (TEXT) for column k; a TIMELINE
    column writes endpoint e = ``values[r, k]``'s events ``ev_first[2r+e] .. ev_first[2r+e+1]``
    (time ``ev_ts`` in nanoseconds, frame ``ev_frame`` or null, text ``ev_tail``; the time
    and frame are columns of the event table: strided). ``end`` closes each entry.
    """
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t n_kinds = kinds.shape[0]
    cdef Py_ssize_t r, k
    cdef int64_t kind, g, j
    with nogil:
        for r in range(lo, hi):
            if r > lo:
                out[pos] = _COMMA
                pos += 1
            for k in range(n_kinds):
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
                        pos = _put(out, pos, _TS, 0, _TS.shape[0])
                        pos = _put_seconds(out, pos, ev_ts[j])
                        pos = _put(out, pos, _FRAME, 0, _FRAME.shape[0])
                        if ev_frame[j] >= 0:
                            pos = _put_int(out, pos, ev_frame[j])
                        else:
                            pos = _put(out, pos, _NULL, 0, 4)
                        pos = _put_text(out, pos, buf, starts, ends, ev_tail[j])
                    out[pos] = _RBRACKET
                    pos += 1
            pos = _put(out, pos, end, 0, end.shape[0])
    return pos
