"""Compiled kernel of ``traceaudit.tracking.excerpts``: records a batch's packets in the
connections' head and ring slots, and the control packets that leave the ring in the pool.
The layout (HEAD, RING, P_* pool columns ...) is declared in ``_excerpts.pxd``."""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t

from traceaudit.capture.tcpflags cimport FIN, RST, SYN

cdef enum:
    _CONTROL = SYN | FIN | RST


def record_batch(const int64_t[::1] conn_ids, const uint8_t[::1] from_client,
                 const uint16_t[::1] flags, const uint32_t[::1] seq, const uint32_t[::1] ack,
                 const int32_t[::1] plen, const uint16_t[::1] win, const int64_t[::1] ts,
                 const int64_t[::1] frame, int64_t[::1] count, int64_t[:, ::1] s_frame,
                 int64_t[:, ::1] s_ts, uint32_t[:, ::1] s_seq, uint32_t[:, ::1] s_ack,
                 int32_t[:, ::1] s_len, uint16_t[:, ::1] s_win, uint16_t[:, ::1] s_flags,
                 int64_t[:, ::1] pool, int64_t n_pool, int32_t[::1] pool_count,
                 Py_ssize_t start):
    """Record rows ``start``.. of a batch (``from_client``: bool as uint8). Returns (pool
    rows, next row); stops early when the pool is full so that the caller can grow it and call
    again."""
    cdef Py_ssize_t n = conn_ids.shape[0]
    cdef Py_ssize_t pool_rows = pool.shape[0]
    cdef Py_ssize_t stop = n
    cdef Py_ssize_t i, j
    cdef int64_t c, k
    cdef uint16_t old
    with nogil:
        for i in range(start, n):
            if n_pool >= pool_rows:
                stop = i
                break
            c = conn_ids[i]
            k = count[c]
            if k < HEAD:
                j = k
            else:
                j = HEAD + _ring_slot(k - HEAD)
                if k >= SLOTS:
                    old = s_flags[c, j]
                    if (old & _CONTROL) != 0 and pool_count[c] < POOL_MAX:
                        pool[n_pool, P_CONN] = c
                        pool[n_pool, P_IDX] = k - RING
                        pool[n_pool, P_FRAME] = s_frame[c, j]
                        pool[n_pool, P_TS] = s_ts[c, j]
                        pool[n_pool, P_SEQ] = s_seq[c, j]
                        pool[n_pool, P_ACK] = s_ack[c, j]
                        pool[n_pool, P_LEN] = s_len[c, j]
                        pool[n_pool, P_WIN] = s_win[c, j]
                        pool[n_pool, P_FLAGS] = old
                        n_pool += 1
                        pool_count[c] += 1
            s_frame[c, j] = frame[i]
            s_ts[c, j] = ts[i]
            s_seq[c, j] = seq[i]
            s_ack[c, j] = ack[i]
            s_len[c, j] = plen[i]
            s_win[c, j] = win[i]
            s_flags[c, j] = flags[i] | (0 if from_client[i] else FROM_SERVER)
            count[c] = k + 1
    return n_pool, stop


@cython.cdivision(True)
cdef inline int64_t _ring_slot(int64_t k) noexcept nogil:
    """``k % RING`` for ``k >= 0`` (C's remainder equals Python's for non-negative operands)."""
    return k % RING
