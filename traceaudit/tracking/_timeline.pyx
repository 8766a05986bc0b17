"""Compiled kernels of ``traceaudit.tracking.timeline`` (see that module for the corrections).

``_group_kernel`` groups the event rows by endpoint (a counting sort), ``_correct_kernel``
applies the hindsight corrections to the flagged endpoints' rows (``_apply_kernel``) and puts
each group in time order, straight into the result. Both release the GIL.
"""

from libc.stdint cimport int64_t, uint8_t

from traceaudit.tracking.events cimport EV_CONN, EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE, EV_TS
from traceaudit.tracking.facts cimport EndpointFacts
from traceaudit.tracking.states cimport (CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, FIN_WAIT_1,
                                         LAST_ACK, SYN_RECEIVED, TIME_WAIT, Hindsight, Reason)

cdef extern from *:
    """
    /* GCC's prefetch: (read, keep in every cache level); no effect on results */
    #define traceaudit_prefetch(p) __builtin_prefetch((p), 0, 3)
    """
    void traceaudit_prefetch(const void *p) noexcept nogil


cdef enum:
    #: rows of ``perm`` the correction kernel asks the CPU to fetch ahead of the one it copies:
    #: the rows it reads are scattered over the whole event table (grouping by endpoint), and a
    #: cache miss per row was most of the kernel's time (22 -> 11 ms for 860,000 rows)
    _AHEAD = 16


def _group_kernel(const int64_t[:, ::1] ev, const uint8_t[::1] keep, const int64_t[::1] flags,
                  int64_t[::1] start, int64_t[::1] perm, int64_t[::1] pos):
    """Counting sort of the rows marked in ``keep`` (bool as uint8) by endpoint
    (conn * 2 + endpoint): fills ``start`` (each endpoint's first position, then the total;
    zeros on entry) and ``perm`` (row numbers, by endpoint, in emission order). Returns how
    many rows are of flagged endpoints."""
    cdef Py_ssize_t n_keys = flags.shape[0]
    cdef Py_ssize_t n = ev.shape[0]
    cdef Py_ssize_t i, k
    cdef int64_t n_flagged = 0
    with nogil:
        for i in range(n):
            if keep[i]:
                k = ev[i, EV_CONN] * 2 + ev[i, EV_ENDPOINT]
                start[k + 1] += 1
                if flags[k] != 0:
                    n_flagged += 1
        for k in range(n_keys):
            start[k + 1] += start[k]
        for k in range(n_keys):
            pos[k] = start[k]
        for i in range(n):
            if keep[i]:
                k = ev[i, EV_CONN] * 2 + ev[i, EV_ENDPOINT]
                perm[pos[k]] = i
                pos[k] += 1
    return n_flagged


def _correct_kernel(const int64_t[:, ::1] ev, const int64_t[::1] flags,
                    const EndpointFacts[:, ::1] ends, const int64_t[::1] start,
                    const int64_t[::1] perm, int64_t[:, ::1] out, int64_t[::1] ts,
                    int64_t[::1] order, int64_t[:, ::1] sub, int64_t[::1] sub_keys,
                    uint8_t[::1] sub_keep, uint8_t[::1] sub_extra, int64_t fin_timeout_ns):
    """``corrected_events`` from the grouped rows (``_group_kernel``), written to ``out``
    (``ts``, ``order``: scratch of its length; ``sub``..: scratch for the widest group, and
    one more row of ``sub`` to hold a row being moved; ``sub_keep``, ``sub_extra``: bool as
    uint8). ``flags``: each endpoint's ``hindsight`` (conn * 2 + endpoint); ``ends``: the
    endpoint facts. Returns the rows used."""
    if ends.shape[0] * 2 < flags.shape[0] or ends.shape[1] != 2:
        raise ValueError("_correct_kernel: endpoint facts of fewer connections than flags")
    cdef Py_ssize_t n_keys = flags.shape[0]
    cdef Py_ssize_t width = ev.shape[1]
    cdef Py_ssize_t held = sub.shape[0] - 1
    cdef Py_ssize_t w = 0, g, k, j, h, c, a, b
    cdef int64_t r, tx, ox, rows
    with nogil:
        rows = start[n_keys]
        for k in range(n_keys):
            a = start[k]
            b = start[k + 1]
            if a == b:
                continue
            g = w
            if flags[k] == 0:
                for j in range(a, b):
                    if j + _AHEAD < rows:
                        traceaudit_prefetch(&ev[perm[j + _AHEAD], 0])
                    r = perm[j]
                    for c in range(width):
                        out[w, c] = ev[r, c]
                    ts[w] = ev[r, EV_TS]
                    order[w] = 2 * r + 1
                    w += 1
            else:
                for j in range(a, b):
                    for c in range(width):
                        sub[j - a, c] = ev[perm[j], c]
                    sub_keys[j - a] = k
                    sub_keep[j - a] = 1
                    sub_extra[j - a] = 0
                _apply_kernel(sub, sub_keys, b - a, flags, ends, sub_keep, sub_extra,
                              fin_timeout_ns)
                for j in range(b - a):
                    r = perm[a + j]
                    if sub_extra[j]:
                        # the FIN_WAIT_1 added for crossed FINs sorts just before its CLOSING
                        for c in range(width):
                            out[w, c] = sub[j, c]
                        out[w, EV_STATE] = FIN_WAIT_1
                        ts[w] = sub[j, EV_TS]
                        order[w] = 2 * r
                        w += 1
                    if sub_keep[j]:
                        for c in range(width):
                            out[w, c] = sub[j, c]
                        ts[w] = sub[j, EV_TS]
                        order[w] = 2 * r + 1
                        w += 1
            # time order inside the group (rows mostly arrive in it): insertion sort by
            # (ts, order)
            for j in range(g + 1, w):
                tx = ts[j]
                ox = order[j]
                if ts[j - 1] < tx or (ts[j - 1] == tx and order[j - 1] < ox):
                    continue
                for c in range(width):
                    sub[held, c] = out[j, c]
                h = j - 1
                # (h stops at g - 1 >= -1: the test of h >= g comes first, no index is negative)
                while h >= g and (ts[h] > tx or (ts[h] == tx and order[h] > ox)):
                    for c in range(width):
                        out[h + 1, c] = out[h, c]
                    ts[h + 1] = ts[h]
                    order[h + 1] = order[h]
                    h -= 1
                for c in range(width):
                    out[h + 1, c] = sub[held, c]
                ts[h + 1] = tx
                order[h + 1] = ox
    return w


cdef void _apply_kernel(int64_t[:, ::1] ev, const int64_t[::1] keys, Py_ssize_t n,
                        const int64_t[::1] flags, const EndpointFacts[:, ::1] ends,
                        uint8_t[::1] keep, uint8_t[::1] extra,
                        int64_t fin_timeout_ns) noexcept nogil:
    """``ev``: the flagged pairs' rows, grouped by pair (``keys``: conn * 2 + endpoint), in
    emission order within a group; corrected in place. Marks dropped rows in ``keep`` and the
    CLOSING rows to copy as FIN_WAIT_1 in ``extra``. Only the first ``n`` rows are used.
    The facts, hence the flags, are those of the connection's current incarnation: only the
    rows after its last NEW_INCARNATION row are corrected."""
    cdef Py_ssize_t a = 0, b, i, tw, a0
    cdef int64_t key, f, fin_frame
    cdef const EndpointFacts* ep
    while a < n:
        key = keys[a]
        b = a
        while b < n and keys[b] == key:
            b += 1
        ep = &ends[key >> 1, key & 1]
        f = flags[key]
        a0 = a
        for i in range(a, b):
            if ev[i, EV_REASON] == Reason.NEW_INCARNATION:
                a0 = i + 1
        if f & Hindsight.TW_SKIPPED:
            tw = -1
            for i in range(a0, b):
                if ev[i, EV_STATE] == TIME_WAIT:
                    tw = i
                    break
            if tw >= 0:
                ev[tw, EV_STATE] = CLOSED
                ev[tw, EV_REASON] = Reason.TIME_WAIT_SKIPPED
                for i in range(tw + 1, b):
                    if ev[i, EV_STATE] == CLOSED:
                        keep[i] = 0
        if f & Hindsight.TW_NEVER:
            for i in range(a0, b):
                if ev[i, EV_STATE] == TIME_WAIT:
                    keep[i] = 0
                    break
        if f & Hindsight.FW2_EXPIRED:
            for i in range(a0, b):
                if ev[i, EV_STATE] == CLOSED and ev[i, EV_REASON] == Reason.SENT_RST:
                    # flagged only when the RST came fin_timeout or more after FIN_WAIT_2
                    ev[i, EV_REASON] = Reason.FIN_WAIT_2_EXPIRED
                    ev[i, EV_TS] = ep.fw2_since_ns + fin_timeout_ns
                    ev[i, EV_FRAME] = -1
                    break
        if f & Hindsight.FINS_CROSSED:
            fin_frame = ep.fin_frame
            for i in range(a0, b):
                if ev[i, EV_STATE] == CLOSE_WAIT and ev[i, EV_FRAME] <= fin_frame:
                    keep[i] = 0
                if ev[i, EV_STATE] == CLOSING and ev[i, EV_FRAME] == fin_frame:
                    extra[i] = 1
        if f & Hindsight.SYN_ACK_AGAIN:
            for i in range(a0, b):
                if ev[i, EV_STATE] == SYN_RECEIVED and ev[i, EV_REASON] == Reason.ACK_OF_SYN_LOST:
                    keep[i] = 0
                    if i > a0 and ev[i - 1, EV_STATE] == ESTABLISHED:
                        keep[i - 1] = 0
        if f & Hindsight.FIN_ACK_LOST:
            for i in range(a0, b):
                if ev[i, EV_STATE] == LAST_ACK and ev[i, EV_REASON] == Reason.ACK_LOST:
                    keep[i] = 0
                    if i > a0 and ev[i - 1, EV_STATE] == CLOSED:
                        keep[i - 1] = 0
        a = b
