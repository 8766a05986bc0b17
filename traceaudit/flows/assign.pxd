# Flow-table layouts shared by the compiled core and Python (traceaudit.flows.assign).
cpdef enum:
    # Per-connection integer fields (columns of the ``conn`` matrix; one row per connection).
    F_SLOT = 0  # the 4-tuple slot this connection lives in
    F_CLIENT_IS_A = 1  # 1 when the client is endpoint A of the slot (the lower address:port)
    F_GUESSED = 2  # 1 when no SYN / SYN-ACK fixed the orientation
    F_IPV = 3
    F_FIRST_TS = 4
    F_LAST_TS = 5
    F_FIRST_FRAME = 6
    F_LAST_FRAME = 7
    F_BASE = 8  # + d: Wireshark's base_seq of direction d (0 client→server, 1 back)
    F_BASE_SET = 10  # + d: 1 once that base_seq is known
    F_TUNNELED = 12
    F_UNUSED_13 = 13  # spare
    F_PREV = 14  # previous incarnation of the same 4-tuple, -1 when none
    # Per-direction blocks: d = 0 client→server, 1 server→client; field = base + d.
    F_PKTS = 15
    F_BYTES = 17
    F_PAYLOAD = 19
    F_DIR_FIRST_TS = 21
    F_DIR_LAST_TS = 23
    F_DIR_FIRST_FRAME = 25
    F_DIR_LAST_FRAME = 27
    N_FIELDS = 29

    # Slot fields (columns of the ``slots`` matrix; one row per 4-tuple).
    S_A_HI = 0
    S_A_LO = 1
    S_B_HI = 2
    S_B_LO = 3
    S_A_PORT = 4
    S_B_PORT = 5
    S_CONN = 6
