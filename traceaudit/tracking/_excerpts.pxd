# Excerpt layout shared by the compiled kernel and Python (traceaudit.tracking.excerpts
# re-exports these names from traceaudit.tracking._excerpts).
cpdef enum:
    HEAD = 3  # first packets of a connection (SYN, SYN-ACK, ACK)
    RING = 8  # its last packets
    SLOTS = HEAD + RING
    POOL_MAX = 8  # control packets per connection kept after they left the ring
    FROM_SERVER = 0x8000  # bit added to the stored flags of a packet the server sent
    # Pool columns (int64 matrix, one row per evicted control packet).
    P_CONN = 0
    P_IDX = 1
    P_FRAME = 2
    P_TS = 3
    P_SEQ = 4
    P_ACK = 5
    P_LEN = 6
    P_WIN = 7
    P_FLAGS = 8
    N_POOL = 9
