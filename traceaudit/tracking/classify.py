"""Per-connection verdicts from tracker facts: close role and close kind (vectorised)."""

from __future__ import annotations

import numpy as np

from traceaudit.tracking import kernel as K
from traceaudit.tracking.states import CloseKind, CloseRole

_ROLES = np.array([CloseRole.CLIENT, CloseRole.SERVER, CloseRole.SIMULTANEOUS, CloseRole.NONE],
                  dtype=object)


def close_roles(trk: np.ndarray) -> np.ndarray:
    """Who sent the first FIN or RST: client, server, simultaneous (FINs crossed) or none."""
    closer = trk[:, K.K_CLOSER]
    return _ROLES[np.where(closer < 0, 3, closer)]


def close_kinds(trk: np.ndarray) -> np.ndarray:
    """How the connection ended, checked in this order:

    refused      the SYN was answered by an acceptable RST and no SYN-ACK was ever seen
    reset        an RST was accepted by its receiver (or sent by an endpoint we track)
    graceful     both sides sent FIN, no RST
    half_closed  one side sent FIN, no RST
    open         neither FIN nor RST
    """
    fins = trk[:, K.E_FIN] + trk[:, K.NE + K.E_FIN]
    rsts = (trk[:, K.E_RST] + trk[:, K.NE + K.E_RST]) > 0
    kind = np.full(len(trk), CloseKind.OPEN, dtype=object)
    kind[fins == 1] = CloseKind.HALF_CLOSED
    kind[fins == 2] = CloseKind.GRACEFUL
    kind[rsts] = CloseKind.RESET
    kind[trk[:, K.K_REFUSED] == 1] = CloseKind.REFUSED
    return kind
