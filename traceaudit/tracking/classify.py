"""Per-connection verdicts from tracker facts: close role and close kind (vectorised).

Both are returned as small integer codes into their label arrays (``ROLE_LABELS``,
``KIND_LABELS``): the flow table keeps them coded (``flows.columns.Coded``).
"""

from __future__ import annotations

import numpy as np

from traceaudit.tracking import kernel as K
from traceaudit.tracking.states import CloseKind, CloseRole

ROLE_LABELS = np.array([CloseRole.CLIENT, CloseRole.SERVER, CloseRole.SIMULTANEOUS,
                        CloseRole.NONE], dtype=object)
KIND_LABELS = np.array([CloseKind.OPEN, CloseKind.HALF_CLOSED, CloseKind.GRACEFUL,
                        CloseKind.RESET, CloseKind.REFUSED], dtype=object)


def close_role_codes(trk: np.ndarray) -> np.ndarray:
    """Who sent the first FIN or RST: client, server, simultaneous (FINs crossed) or none."""
    closer = trk[:, K.K_CLOSER]
    return np.where(closer < 0, 3, closer)


def close_kind_codes(trk: np.ndarray) -> np.ndarray:
    """How the connection ended, checked in this order:

    refused      the SYN was answered by an acceptable RST and no SYN-ACK was ever seen
    reset        an RST was accepted by its receiver (or sent by an endpoint we track)
    graceful     both sides sent FIN, no RST
    half_closed  one side sent FIN, no RST
    open         neither FIN nor RST
    """
    fins = trk[:, K.E_FIN] + trk[:, K.NE + K.E_FIN]
    rsts = (trk[:, K.E_RST] + trk[:, K.NE + K.E_RST]) > 0
    kind = np.zeros(len(trk), np.int8)
    kind[fins == 1] = 1
    kind[fins == 2] = 2
    kind[rsts] = 3
    kind[trk[:, K.K_REFUSED] == 1] = 4
    return kind
