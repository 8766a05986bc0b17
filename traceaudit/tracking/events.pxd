# Event matrix columns shared by the compiled core and Python (traceaudit.tracking.events;
# traceaudit.tracking.tracker re-exports them). The tracker's event table is an (n, 6) int64
# matrix, one row per state transition.
cpdef enum:
    EV_CONN = 0  # connection index (the flow table's id)
    EV_ENDPOINT = 1  # 0 client, 1 server
    EV_TS = 2  # capture time of the transition, ns
    EV_FRAME = 3  # frame that caused it, -1 when none (a timer)
    EV_STATE = 4  # state entered (EndpointState value)
    EV_REASON = 5  # why (Reason value)
    N_EV = 6  # columns
