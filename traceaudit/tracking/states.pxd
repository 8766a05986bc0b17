# The tracker's vocabulary, declared once for the compiled core and Python: endpoint states
# (RFC 9293 §3.3.2), why a state changed, who closed first, how a connection ended, and the bit
# sets of the ``hindsight`` and ``rst_answers_kind`` facts (facts.pxd). Each ``cpdef enum`` is an
# IntEnum in Python (``traceaudit.tracking.states``); the values are what the tracker stores.
#
# Cython qualifies every member's C name with this module's, so the members cannot clash in C
# with another .pxd's (zeek_kernel.pxd's ESTABLISHED, CLOSED, RESET); at the Cython level they
# share this module's namespace: no two enums here use the same member name.


cpdef enum EndpointState:
    """An endpoint's RFC 9293 state, as the tracker infers it."""
    UNSEEN = -1        # no packet has involved this endpoint yet (no timeline entry)
    LISTEN = 0         # waiting for a connection request (the server's listener)
    SYN_SENT = 1       # sent a SYN, waiting for the SYN-ACK
    SYN_RECEIVED = 2   # got a SYN, sent its SYN-ACK, waiting for the ACK of it
    ESTABLISHED = 3    # handshake done, data can flow both ways
    FIN_WAIT_1 = 4     # closed first: sent its FIN, not yet acknowledged
    FIN_WAIT_2 = 5     # its FIN is acknowledged; waiting for the peer's FIN
    CLOSE_WAIT = 6     # got the peer's FIN; waiting for its own application to close()
    CLOSING = 7        # both sides sent FIN before seeing the other's (simultaneous close)
    LAST_ACK = 8       # closed second: sent its FIN after the peer's, waiting for the ACK
    TIME_WAIT = 9      # closed first and saw both FINs; lingers 2×MSL to absorb stragglers
    CLOSED = 10        # no connection state (closed, reset, or never accepted)


cpdef enum Reason:
    """Why a timeline entry was written (kept with each transition for the reports)."""
    SENT_SYN = 0
    SENT_SYN_ACK = 1
    RECEIVED_SYN_ACK = 2
    RECEIVED_ACK_OF_SYN = 3
    SENT_FIN = 4
    RECEIVED_FIN = 5
    FIN_ACKNOWLEDGED = 6
    SENT_RST = 7
    RECEIVED_RST = 8
    TIME_WAIT_EXPIRED = 9
    MIDSTREAM = 10            # capture starts mid-connection: state inferred from traffic
    RECEIVED_SYN = 11         # simultaneous open: a SYN reached an endpoint in SYN_SENT
    TIME_WAIT_RECYCLED = 12   # a new SYN on the same 4-tuple ended this TIME_WAIT
    ACK_LOST = 13             # the peer retransmitted its FIN: our ACK of it never arrived
    TIME_WAIT_SKIPPED = 14    # answered the peer's retransmitted FIN with RST: no TIME_WAIT
    FIN_WAIT_2_EXPIRED = 15   # answered with RST while in FIN_WAIT_2: the orphan timed out
    NEW_INCARNATION = 16      # the 4-tuple came back long after the connection ended: this
                              # incarnation is over (CLOSED), the trackers start a new one
    ACK_OF_SYN_LOST = 17      # it retransmitted its SYN-ACK: the ACK of it never arrived
    SYN_ACK_GAVE_UP = 18      # SYN_RECEIVED, silent when its next SYN-ACK retransmission was due
                              # (or answering with RST after that): the half-open connection
                              # was dropped (Linux: tcp_synack_retries)


cpdef enum Closer:
    """Who closed first: the sender of the first FIN or RST (ConnFacts.closer)."""
    NONE = -1          # no FIN and no RST in the capture
    CLIENT = 0
    SERVER = 1
    SIMULTANEOUS = 2   # both FINs were sent before either side saw the other's


cpdef enum CloseKind:
    """How a connection ended (the flow table's close_kind; ``classify.close_kind_codes``)."""
    OPEN = 0           # neither FIN nor RST: still open (or handshake incomplete)
    HALF_CLOSED = 1    # one side's FIN only, no RST, at capture end
    GRACEFUL = 2       # both FINs sent and acknowledged, no RST
    RESET = 3          # ended by an RST after the handshake (or mid-stream)
    REFUSED = 4        # the SYN was answered by RST, no SYN-ACK


cpdef enum Hindsight:
    """Bits of EndpointFacts.hindsight: corrections the timeline applies afterwards
    (``timeline.py``), because later packets showed what the endpoint really did."""
    TW_SKIPPED = 1     # a bare RST answered the peer's FIN again: its TIME_WAIT was gone
    FW2_EXPIRED = 2    # a bare RST from FIN_WAIT_2 after tcp_fin_timeout: the orphan had gone
    FINS_CROSSED = 4   # its FIN crossed the peer's (simultaneous close): never in CLOSE_WAIT
    FIN_ACK_LOST = 8   # it retransmitted its FIN from CLOSED: the ACK of its FIN never came
    TW_NEVER = 16      # data after its FIN was answered by a bare RST: never in TIME_WAIT
    SYN_ACK_AGAIN = 32  # it retransmitted its SYN-ACK after the peer's ACK: that ACK never
                        # arrived, nor later ones until it sends something else itself


cpdef enum Answered:
    """Bits of EndpointFacts.rst_answers_kind: what the peer segment its first RST answers
    carried."""
    DATA = 1           # payload
    FIN = 2            # a FIN
    SYN = 4            # a SYN (or SYN-ACK)
    FIN_AGAIN = 8      # a FIN its sender had sent before (a retransmission)


cpdef enum RstOrigin:
    """EndpointFacts.rst_origin: who sent the endpoint's first RST (kernel.pyx, RST origin)."""
    NO_RST = 0         # it sent no RST
    ENDPOINT = 1       # the endpoint itself (nothing, or too little, says otherwise)
    PATH = 2           # something on the path forged it with the endpoint's address


cpdef enum RstEvidence:
    """Bits of EndpointFacts.rst_evidence: how its first RST differs from what the endpoint
    itself sends. TTL and RACE are strong; the rest are weak: an endpoint's own kernel resets
    without a socket too (no timestamps, an ID of another counter, the peer's ACK as its
    sequence number), so they count only for an RST that carries timestamps (kernel.pyx)."""
    TTL = 1            # TTL / hop limit outside the range of its other segments
    RACE = 2           # its own segments, with new sequence or ACK numbers, came after it
    IP_ID = 4          # IPv4 ID out of its otherwise sequential IDs
    NO_TIMESTAMPS = 8  # no timestamps option, which every other segment of it carried
    TSVAL = 16         # TSval older than one it had already sent
    SEQ = 32           # sequence number not where its next byte would be


cpdef enum Confidence:
    """EndpointFacts.rst_confidence: how sure the rst_origin verdict is."""
    NO_VERDICT = 0
    LOW = 1            # nothing of the endpoint's own to compare the RST with
    MEDIUM = 2
    HIGH = 3
