# Zeek view constants and layouts shared by the compiled core and Python (traceaudit.tracking.zeek_kernel).
cpdef enum:
    # Zeek endpoint states (TCP_ENDPOINT_*; the script constants have the same values).
    INACTIVE = 0
    SYN_SENT = 1
    SYN_ACK_SENT = 2
    PARTIAL = 3
    ESTABLISHED = 4
    CLOSED = 5
    RESET = 6

    # conn_state codes (index into CONN_STATES).
    CS_S0 = 0
    CS_S1 = 1
    CS_SF = 2
    CS_REJ = 3
    CS_S2 = 4
    CS_S3 = 5
    CS_RSTO = 6
    CS_RSTR = 7
    CS_RSTOS0 = 8
    CS_RSTRH = 9
    CS_SH = 10
    CS_SHR = 11
    CS_OTH = 12

    # Per-segment capture facts (optional input column; see ZeekTracker.add).
    SEG_BAD_CSUM = 1  # TCP checksum verified and wrong
    SEG_PAYLOAD_CUT = 2  # payload not fully captured (snaplen): not given to the reassembler
    SEG_HEADER_CUT = 4  # TCP header incl. options not fully captured: Zeek ignores the segment
    SEG_BAD_IP_CSUM = 8  # IPv4 header checksum wrong: Zeek drops it before connection lookup

    # Live-connection fields (columns of ``zc``).
    Z_ROW = 0  # its output row
    Z_SLOT = 1
    Z_ORIG_IS_A = 2  # 1 when Zeek's originator is endpoint A of the slot
    Z_LAST_T = 3  # Zeek's Conn::last_time (ns)
    Z_SEEN = 4  # hist_seen bit mask (responder bits << 16)
    Z_INACT = 5  # inactivity timeout (ns)
    Z_T_ATTEMPT = 6  # pending timers (ns; -1 none)
    Z_T_EXP1 = 7  # expire timer chain armed at creation
    Z_T_EXP2 = 8  # expire timer chain armed by a half close
    Z_T_PARTIAL = 9
    Z_T_RESET = 10
    Z_T_DELETE = 11
    Z_PARTIAL = 12  # TCPSessionAdapter::is_partial
    Z_FPS = 13  # first_packet_seen bits: 1 orig, 2 resp
    Z_FIRST_SYNACK = 14  # the first processed packet was an (unflipped) SYN-ACK from the originator
    Z_NPK = 15  # packets processed
    Z_TMIN = 16  # earliest pending timer (ns; NEVER when none): the fast-path check
    ZE = 17  # endpoint blocks start here: orig at ZE, resp at ZE + NEP

    # Endpoint fields (offset within an endpoint block).
    P_STATE = 0
    P_PREV = 1
    P_START = 2  # start_seq (raw 32-bit)
    P_LAST = 3  # last_seq
    P_ACKSEQ = 4  # highest ack the peer sent for this endpoint's data
    P_DID_CLOSE = 5
    P_FIN_CNT = 6
    P_FIN_SEQ = 7  # relative
    P_RST_CNT = 8
    P_HL_SYN = 9  # hist_last_SYN / FIN / RST (relative)
    P_HL_FIN = 10
    P_HL_RST = 11
    P_CNT_C = 12  # scaled history counters and thresholds: C, T, W, G
    P_THR_C = 13
    P_CNT_T = 14
    P_THR_T = 15
    P_CNT_W = 16
    P_THR_W = 17
    P_CNT_G = 18
    P_THR_G = 19
    P_PKTS = 20  # packets processed (ConnSize)
    P_R_LAST = 21  # reassembler: relative seq delivered up to (starts at 1)
    P_R_TRIM = 22  # reassembler: trimmed (acked) up to
    P_NBLK = 23  # reassembler: out-of-order blocks held
    P_BLK = 24  # NBLK pairs (start, end), sorted by start
    NBLK = 4
    P_IP_BYTES = 32  # sum of the IP total lengths of its processed packets (ConnSize)
    P_SEQ_WRAPS = 33  # times last_seq wrapped past 2**32 (TCP_Endpoint::seq_wraps)
    P_ACK_WRAPS = 34  # times ack_seq wrapped (TCP_Endpoint::ack_wraps)
    NEP = 35
    NZ = 87

    # Output row fields (columns of ``out``).
    O_SLOT = 0
    O_ORIG_IS_A = 1
    O_IPV = 2
    O_STATE = 3  # conn_state code, -1 while live
    O_ORIG_PKTS = 4
    O_RESP_PKTS = 5
    O_START_TS = 6
    O_FIRST_FRAME = 7
    O_LAST_FRAME = 8
    O_HLEN = 9  # history length (letters beyond HMAX are counted, not stored)
    O_LIVE = 10  # its zc row while live, -1 once removed
    O_TUNNELED = 11
    O_CONN = 12  # our connection id of its first packet
    O_LAST_T = 13  # Conn::last_time when removed (ns): duration = O_LAST_T - O_START_TS
    O_ORIG_SIZE = 14  # TCP_Endpoint::Size() of the originator when removed (uint64 bits)
    O_RESP_SIZE = 15  # ... of the responder
    O_ORIG_IP_BYTES = 16  # sum of IP total lengths, originator's packets (ConnSize)
    O_RESP_IP_BYTES = 17
    O_MISSED = 18  # bytes of the content gaps reported (content_gap → missed_bytes)
    NO = 19
    HMAX = 48

    # Parameters (``prm``), durations in ns.
    PR_IGNORE_CSUM = 0
    PR_ATTEMPT = 1  # tcp_attempt_delay
    PR_CLOSE_DELAY = 2  # tcp_close_delay
    PR_PARTIAL_CLOSE = 3  # tcp_partial_close_delay
    PR_RESET_DELAY = 4  # tcp_reset_delay
    PR_SYN_TIMEOUT = 5  # tcp_SYN_timeout (first expire timer)
    PR_SESSION_TIMER = 6  # tcp_session_timer (expire timer period)
    PR_LINGER = 7  # tcp_connection_linger
    PR_INACT_TCP = 8  # tcp_inactivity_timeout
    PR_INACT_INIT = 9  # udp_inactivity_timeout (a TCP connection's timeout until the handshake)
    PR_INACT_LONG = 10  # Conn::port_inactivity_timeouts value
    N_PRM = 11

    # hist_seen bits (Zeek's TCP_Endpoint::HIST_*).
    H_SYN = 1
    H_FIN = 2
    H_RST = 4
    H_FIN_RST = 8
    H_DATA = 16
    H_ACK = 32
    H_MULTI = 64
