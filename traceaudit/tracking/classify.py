"""Per-connection verdicts from tracker facts: close role and close kind (vectorised).

Both are returned as small integer codes into their label arrays (``ROLE_LABELS``,
``KIND_LABELS``): the flow table keeps them coded (``flows.columns.Coded``). A close kind's
code is its ``CloseKind`` value; a close role's is its ``Closer`` value, NONE (-1) coded last.
"""

from __future__ import annotations

import numpy as np

from traceaudit.tracking.states import CLOSE_KIND_LABELS, CLOSER_LABELS, CloseKind, Closer

ROLE_LABELS = np.array([CLOSER_LABELS[Closer.CLIENT], CLOSER_LABELS[Closer.SERVER],
                        CLOSER_LABELS[Closer.SIMULTANEOUS], CLOSER_LABELS[Closer.NONE]],
                       dtype=object)
KIND_LABELS = np.array([CLOSE_KIND_LABELS[kind] for kind in CloseKind], dtype=object)


def close_role_codes(conns: np.ndarray) -> np.ndarray:
    """Who sent the first FIN or RST: client, server, simultaneous (FINs crossed) or none."""
    closer = conns["closer"]
    return np.where(closer < 0, len(ROLE_LABELS) - 1, closer)


def close_kind_codes(ends: np.ndarray, conns: np.ndarray) -> np.ndarray:
    """How the connection ended (``CloseKind``), checked in this order:

    refused      the SYN was answered by an acceptable RST and no SYN-ACK was ever seen
    reset        an RST was accepted by its receiver (or sent by an endpoint we track)
    graceful     both sides sent FIN, no RST
    half_closed  one side sent FIN, no RST
    open         neither FIN nor RST
    """
    fins = ends["fin_sent"].sum(axis=1)
    rsts = ends["rst_count"].sum(axis=1) > 0
    kind = np.full(len(conns), CloseKind.OPEN, np.int8)
    kind[fins == 1] = CloseKind.HALF_CLOSED
    kind[fins == 2] = CloseKind.GRACEFUL
    kind[rsts] = CloseKind.RESET
    kind[conns["refused"] == 1] = CloseKind.REFUSED
    return kind
