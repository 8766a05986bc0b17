"""Endpoint states (RFC 9293 §3.3.2), close roles and kinds, and why a state changed.

The enums are declared once, in ``states.pxd``, for the compiled tracker and Python alike:
``EndpointState``, ``Reason``, ``Closer``, ``CloseKind``, ``Hindsight`` and ``Answered`` are
IntEnums here (members in declaration order, which is value order), their values what the
tracker stores. Names are what people read; the texts below are what reports print.
"""

#: States in which an endpoint has sent its FIN.
FIN_SENT_STATES = {EndpointState.FIN_WAIT_1, EndpointState.FIN_WAIT_2, EndpointState.CLOSING,
                   EndpointState.LAST_ACK, EndpointState.TIME_WAIT}


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
    Reason.NEW_INCARNATION: "the 4-tuple came back 2×MSL after the connection went quiet: a "
                            "new incarnation begins",
    Reason.ACK_OF_SYN_LOST: "retransmitted its SYN-ACK: the peer's ACK of it never arrived",
    Reason.SYN_ACK_GAVE_UP: "no SYN-ACK retransmission when the next was due: the half-open "
                            "connection was dropped (tcp_synack_retries)",
}

#: The flow table's close_role text of each Closer.
CLOSER_LABELS = {
    Closer.CLIENT: "client",
    Closer.SERVER: "server",
    Closer.SIMULTANEOUS: "simultaneous",
    Closer.NONE: "none",
}

#: The flow table's close_kind text of each CloseKind.
CLOSE_KIND_LABELS = {
    CloseKind.OPEN: "open",
    CloseKind.HALF_CLOSED: "half_closed",
    CloseKind.GRACEFUL: "graceful",
    CloseKind.RESET: "reset",
    CloseKind.REFUSED: "refused",
}


_STATE_NAMES = {int(s): s.name for s in EndpointState}


def state_name(value: int) -> str:
    """``EndpointState(value).name``; a ValueError for a value that is no state (Cython's enums
    would make one up)."""
    try:
        return _STATE_NAMES[int(value)]
    except KeyError:
        raise ValueError(f"{value!r} is not a valid EndpointState") from None
