"""Endpoint states (RFC 9293 §3.3.2), close roles and kinds, and why a state changed.

The integer values are what the compiled tracker stores; names are what people read.
"""

from __future__ import annotations

from enum import IntEnum


class EndpointState(IntEnum):
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


#: States in which an endpoint has sent its FIN.
FIN_SENT_STATES = {EndpointState.FIN_WAIT_1, EndpointState.FIN_WAIT_2, EndpointState.CLOSING,
                   EndpointState.LAST_ACK, EndpointState.TIME_WAIT}


class Reason(IntEnum):
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


REASON_TEXT = {
    Reason.SENT_SYN: "sent SYN",
    Reason.SENT_SYN_ACK: "sent SYN-ACK",
    Reason.RECEIVED_SYN_ACK: "received SYN-ACK",
    Reason.RECEIVED_ACK_OF_SYN: "received the ACK of its SYN",
    Reason.SENT_FIN: "sent FIN",
    Reason.RECEIVED_FIN: "received the peer's FIN",
    Reason.FIN_ACKNOWLEDGED: "its FIN was acknowledged",
    Reason.SENT_RST: "sent RST",
    Reason.RECEIVED_RST: "received RST",
    Reason.TIME_WAIT_EXPIRED: "2×MSL elapsed in TIME_WAIT",
    Reason.MIDSTREAM: "capture starts mid-connection (state inferred)",
    Reason.RECEIVED_SYN: "received SYN while in SYN_SENT (simultaneous open)",
    Reason.TIME_WAIT_RECYCLED: "a new SYN reused the 4-tuple while in TIME_WAIT",
    Reason.ACK_LOST: "the peer retransmitted its FIN, so the ACK of it was lost",
    Reason.TIME_WAIT_SKIPPED: "answered the peer's retransmitted FIN with RST: TIME_WAIT skipped",
    Reason.FIN_WAIT_2_EXPIRED: "answered with RST from FIN_WAIT_2: the socket had timed out",
}


class CloseRole:
    """Who closed first: the sender of the first FIN or RST."""

    CLIENT = "client"
    SERVER = "server"
    SIMULTANEOUS = "simultaneous"   # both FINs were sent before either side saw the other's
    NONE = "none"                   # no FIN and no RST in the capture


class CloseKind:
    GRACEFUL = "graceful"           # both FINs sent and acknowledged, no RST
    HALF_CLOSED = "half_closed"     # one side's FIN only, no RST, at capture end
    RESET = "reset"                 # ended by an RST after the handshake (or mid-stream)
    REFUSED = "refused"             # the SYN was answered by RST, no SYN-ACK
    OPEN = "open"                   # neither FIN nor RST: still open (or handshake incomplete)


def state_name(value: int) -> str:
    return EndpointState(value).name
