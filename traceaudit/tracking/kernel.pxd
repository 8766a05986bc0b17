# What the tracker kernel (traceaudit.tracking.kernel) shares with other compiled modules. Its
# facts are the structs of facts.pxd; its states, reasons and bit sets the enums of states.pxd.

from libc.stdint cimport int64_t

from traceaudit.tracking.facts cimport ConnFacts, EndpointFacts

cpdef enum:
    EV_HEADROOM = 16  # more events than one segment can cause (both endpoints + a recycled one)


# Tracker helper other compiled modules call (traceaudit.retire.kernels). ``ends``: the
# (connections, 2) endpoint facts; ``ev``: the (rows, 6) event matrix, written from ``n_ev``.
cdef int64_t expire_time_wait(EndpointFacts[:, ::1] ends, int64_t[:, ::1] ev, int64_t n_ev,
                              Py_ssize_t c, int64_t now, int64_t msl2) noexcept nogil
