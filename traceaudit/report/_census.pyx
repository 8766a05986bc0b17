"""Compiled kernels of ``traceaudit.report.census``: the events' grid slots, the census levels
(counts, then running sums, in one pass) and the per-service held counts. They release the
GIL."""

cimport cython
from libc.math cimport ceil
from libc.stdint cimport int64_t, uint8_t

import numpy as np

from traceaudit.tracking.events cimport EV_CONN, EV_ENDPOINT, EV_STATE, EV_TS
from traceaudit.tracking.states cimport TIME_WAIT


def _slots(const int64_t[:, ::1] events, int64_t t0, double step, int64_t samples):
    """Per event row, its grid slot (the first grid point at or after it, clipped to
    0 .. samples) and whether its endpoint has a later row."""
    cdef Py_ssize_t n = events.shape[0]
    slot = np.empty(n, np.int64)
    nxt = np.zeros(n, np.bool_)
    cdef int64_t[::1] slot_v = slot
    cdef uint8_t[::1] nxt_v = nxt.view(np.uint8)
    cdef Py_ssize_t i
    cdef double s
    if not step > 0:
        raise ZeroDivisionError("float division by zero")   # (Changes' step is never 0)
    with nogil:
        for i in range(n):
            # (int64 difference, wrapping, then float64 division)
            s = ceil(_divided(<double>(events[i, EV_TS] - t0), step))
            slot_v[i] = 0 if s < 0 else (samples if s > <double>samples else <int64_t>s)
            if i + 1 < n:
                nxt_v[i] = (events[i + 1, EV_CONN] == events[i, EV_CONN] and
                            events[i + 1, EV_ENDPOINT] == events[i, EV_ENDPOINT])
    return slot, nxt


@cython.cdivision(True)
cdef inline double _divided(double x, double step) noexcept nogil:
    """``x / step`` without the zero check (the caller checked that ``step > 0``)."""
    return x / step


def _levels(const int64_t[::1] key, const int64_t[::1] slot, const uint8_t[::1] nxt,
            const int64_t[::1] rows, bint every, Py_ssize_t n_keys, Py_ssize_t samples):
    """``Changes.levels`` in one pass: a row adds one at its slot to its key's count, and its
    endpoint's next row (if any) takes it away again at that row's slot; then running sums.
    The rows are ``rows``, or all of them when ``every`` (``nxt``: bool as uint8)."""
    counts_a = np.zeros((n_keys, samples + 1), np.int64)
    out_a = np.empty((n_keys, samples), np.int64)
    cdef int64_t[:, ::1] counts = counts_a
    cdef int64_t[:, ::1] out = out_a
    cdef Py_ssize_t n = key.shape[0] if every else rows.shape[0]
    cdef Py_ssize_t i, s
    cdef int64_t r, k, level
    with nogil:
        for i in range(n):
            r = i if every else rows[i]
            k = key[r]
            if k < 0:
                continue
            counts[k, slot[r]] += 1
            if nxt[r]:
                counts[k, slot[r + 1]] -= 1
        for k in range(n_keys):
            level = 0
            for s in range(samples):
                level += counts[k, s]
                out[k, s] = level
    return out_a


def _held_counts(const int64_t[:, ::1] events, const uint8_t[::1] nxt,
                 const int64_t[::1] codes, int64_t end_ns, int64_t min_ns,
                 int64_t[:, :, ::1] long, int64_t[:, ::1] tw_end):
    """One pass over the event rows for ``per_service``: ``long[service, endpoint, state + 1]``
    counts the rows whose endpoint stayed in the state entered at least ``min_ns`` (until its
    next row, or the capture end: ``held``), ``tw_end[endpoint, service]`` the endpoints in
    TIME_WAIT at the end (their last row). (``nxt``: bool as uint8.)"""
    cdef Py_ssize_t n = events.shape[0]
    cdef Py_ssize_t i
    cdef int64_t ts, stop, service, endpoint, state
    cdef bint later
    with nogil:
        for i in range(n):
            ts = events[i, EV_TS]
            later = nxt[i]
            stop = events[i + 1, EV_TS] if later else end_ns
            service = codes[events[i, EV_CONN]]
            endpoint = events[i, EV_ENDPOINT]
            state = events[i, EV_STATE]
            if stop - ts >= min_ns:
                long[service, endpoint, state + 1] += 1
            if not later and state == TIME_WAIT:
                tw_end[endpoint, service] += 1
