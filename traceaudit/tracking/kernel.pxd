# Tracker constants and field layout shared by the compiled core and Python (traceaudit.tracking.kernel).

from libc.stdint cimport int64_t

cpdef enum:
    # States (EndpointState values).
    UNSEEN = -1
    LISTEN = 0
    SYN_SENT = 1
    SYN_RECEIVED = 2
    ESTABLISHED = 3
    FIN_WAIT_1 = 4
    FIN_WAIT_2 = 5
    CLOSE_WAIT = 6
    CLOSING = 7
    LAST_ACK = 8
    TIME_WAIT = 9
    CLOSED = 10
    # Reasons (Reason values).
    R_SENT_SYN = 0
    R_SENT_SYN_ACK = 1
    R_RECEIVED_SYN_ACK = 2
    R_RECEIVED_ACK_OF_SYN = 3
    R_SENT_FIN = 4
    R_RECEIVED_FIN = 5
    R_FIN_ACKED = 6
    R_SENT_RST = 7
    R_RECEIVED_RST = 8
    R_TW_EXPIRED = 9
    R_MIDSTREAM = 10
    R_RECEIVED_SYN = 11
    R_TW_RECYCLED = 12
    R_ACK_LOST = 13

    # Per-endpoint fields: endpoint e (0 client, 1 server) uses column e * NE + field.
    E_STATE = 0
    E_SEEN = 1  # it has sent at least one segment
    E_BASE_SET = 2
    E_BASE = 3  # raw sequence number that maps to unwrapped 0
    E_NXT = 4  # highest unwrapped sequence end it has sent
    E_ISN_SET = 5  # it sent a SYN (ISN = unwrapped 0)
    E_FIN = 6  # it sent a FIN
    E_FIN_SEQ = 7  # unwrapped sequence number of its FIN
    E_FIN_FRAME = 8
    E_FIN_TS = 9
    E_FIN_COUNT = 10  # transmissions of its FIN (retransmissions + 1)
    E_FIN_ACKED = 11
    E_FIN_ACKED_FRAME = 12
    E_GOT_FIN = 13  # it received the peer's FIN
    E_GOT_FIN_FRAME = 14
    E_ACK_SET = 15
    E_ACK_MAX = 16  # highest unwrapped ACK it sent (peer's sequence space): its rcv_nxt
    E_RST = 17  # RST segments it sent
    E_RST_FRAME = 18  # its first RST
    E_RST_TS = 19
    E_RST_STATE = 20  # its state just before its first RST
    E_RST_FLAGS = 21  # flags of its first RST (ACK bit tells RST|ACK from a bare RST)
    E_RST_ANSWER = 22  # frame of the peer segment its first RST answers, -1 = unsolicited
    E_RST_ANSWER_KIND = 23  # what that segment carried: bit 1 data, 2 FIN, 4 SYN, 8 FIN again
    E_TW_TS = 24  # when it entered TIME_WAIT
    E_TW_FRAME = 25
    E_STATE_TS = 26  # when it entered its current state
    E_DATA_PKTS = 27  # segments with payload it sent
    E_LAST_DATA_FRAME = 28
    E_LAST_DATA_TS = 29
    E_LAST_FRAME = 30  # its last segment
    E_LAST_TS = 31
    E_LAST_FLAGS = 32
    E_LAST_ACKVAL = 33  # raw ack field of its last segment
    E_LAST_END = 34  # unwrapped sequence end of its last segment
    E_FIN_RETX_FRAME = 35  # first retransmission of its FIN
    E_KEEPALIVES = 36  # keepalive probes it sent (seq = snd_nxt - 1, 0/1 byte, nothing new)
    E_KEEPALIVE_HALF = 37  # ... of which while the connection was half-closed
    E_FW2_TS = 38  # when it entered FIN_WAIT_2
    E_CW_TS = 39  # when it entered CLOSE_WAIT
    E_CW_FRAME = 40
    E_FW2_FRAME = 41
    E_SYN_COUNT = 42  # SYN (or SYN-ACK) transmissions
    E_FLAGS = 43  # hindsight flags: F_TW_SKIPPED, F_FW2_EXPIRED, F_FINS_CROSSED, F_ACK_LOST,
    #                       F_TW_NEVER
    E_DATA_AFTER_FIN = 44  # segments with payload it received after it sent its FIN
    E_ZERO_WIN = 45  # zero-window advertisements it sent
    E_SYN_LAST_FRAME = 46  # its last SYN or SYN-ACK transmission
    NE = 47
    # Connection fields follow the two endpoint blocks.
    K_INIT = 94
    K_MIDSTREAM = 95  # the capture starts after the handshake
    K_CLOSER = 96  # 0 client, 1 server, 2 simultaneous, -1 none
    K_CLOSE_FRAME = 97  # first FIN or RST
    K_CLOSE_TS = 98
    K_SYNACK = 99  # a SYN-ACK was seen
    K_REFUSED = 100  # SYN answered by an acceptable RST before any SYN-ACK
    K_RST_ACCEPTED = 101  # an RST ended the connection
    K_TW_RECYCLED_FRAME = 102  # frame of the SYN that ended this connection's TIME_WAIT
    K_PREV = 103  # previous incarnation of the same 4-tuple, -1 when none
    K_PREV_TW = 104  # 1 when that previous incarnation was still in TIME_WAIT
    N_TRK = 105

    F_TW_SKIPPED = 1
    F_FW2_EXPIRED = 2
    F_FINS_CROSSED = 4
    F_ACK_LOST = 8
    F_TW_NEVER = 16

    ANS_DATA = 1
    ANS_FIN = 2
    ANS_SYN = 4
    ANS_FIN_AGAIN = 8
    EV_HEADROOM = 16  # more events than one segment can cause (both endpoints + a recycled one)


# Tracker helper other compiled modules call (traceaudit.retire.kernels). ``trk``: the
# (connections, N_TRK) tracker matrix; ``ev``: the (rows, 6) event matrix, written from ``n_ev``.
cdef int64_t expire_time_wait(int64_t[:, ::1] trk, int64_t[:, ::1] ev, int64_t n_ev, Py_ssize_t c,
                              int64_t now, int64_t msl2) noexcept nogil
