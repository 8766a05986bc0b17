"""Who sent each endpoint's first RST, as the reports show it.

The tracker decides it (``rst_origin``, ``rst_confidence``, ``rst_evidence`` in facts.pxd;
kernel.pyx); ``origin_table`` keeps those facts, and the TTLs they were judged by, in a small
table that outlives the tracker's (``audit.slimmed`` drops that one before the reports).
"""

from __future__ import annotations

import numpy as np

from traceaudit.tracking.states import Confidence, RstEvidence, RstOrigin

#: Evidence bits by the names the reports give them, in the order they are told.
EVIDENCE_NAMES = {RstEvidence.TTL: "ttl", RstEvidence.RACE: "race", RstEvidence.IP_ID: "ip_id",
                  RstEvidence.TSVAL: "tsval", RstEvidence.NO_TIMESTAMPS: "no_timestamps",
                  RstEvidence.SEQ: "seq"}
ORIGIN_NAMES = {RstOrigin.ENDPOINT: "endpoint", RstOrigin.PATH: "path"}
CONFIDENCE_NAMES = {Confidence.LOW: "low", Confidence.MEDIUM: "medium", Confidence.HIGH: "high"}

#: One endpoint's first RST: verdict, evidence bits, the RST's TTL (-1: no RST) and the TTL
#: range of the endpoint's other segments (lo 256 / hi -1: none). (The RST's frame is in the
#: endpoint's timeline: its "sent RST" entry.)
ORIGIN_DTYPE = np.dtype([("origin", np.int8), ("confidence", np.int8), ("evidence", np.int16),
                         ("rst_ttl", np.int16), ("ttl_lo", np.int16), ("ttl_hi", np.int16)])


def evidence_names(bits: int) -> list[str]:
    """The names of the RstEvidence bits set in ``bits``."""
    return [name for bit, name in EVIDENCE_NAMES.items() if bits & bit]


def ttl_range(lo: int, hi: int) -> str:
    """The TTLs an endpoint's segments arrive with: ``63`` or ``62-63``."""
    return str(lo) if lo == hi else f"{lo}-{hi}"


def origin_table(endpoints: np.ndarray) -> np.ndarray:
    """(connections, 2) ORIGIN_DTYPE from the tracker's (connections, 2) endpoint facts."""
    out = np.zeros(endpoints.shape, ORIGIN_DTYPE)
    for name, fact in (("origin", "rst_origin"), ("confidence", "rst_confidence"),
                       ("evidence", "rst_evidence"), ("rst_ttl", "rst_ttl"),
                       ("ttl_lo", "ttl_lo"), ("ttl_hi", "ttl_hi")):
        out[name] = endpoints[fact]
    return out


def origin_entry(row) -> dict | None:
    """One endpoint's ``rst_origin`` in the JSON report (None: it sent no RST)."""
    origin = int(row["origin"])
    if origin == RstOrigin.NO_RST:
        return None
    lo, hi = int(row["ttl_lo"]), int(row["ttl_hi"])
    return {"origin": ORIGIN_NAMES[origin],
            "confidence": CONFIDENCE_NAMES[int(row["confidence"])],
            "evidence": evidence_names(int(row["evidence"])), "rst_ttl": int(row["rst_ttl"]),
            "usual_ttl": ttl_range(lo, hi) if hi >= 0 else None}


def origin_keys(origins: np.ndarray) -> np.ndarray:
    """One int64 per endpoint that is equal exactly where ``origin_entry`` is (the JSON report
    writes each distinct entry once)."""
    key = origins["origin"].astype(np.int64)
    for name, bits in (("confidence", 4), ("evidence", 8), ("rst_ttl", 10), ("ttl_lo", 10),
                       ("ttl_hi", 10)):
        key = (key << bits) | (origins[name].astype(np.int64) + 1)
    return key
