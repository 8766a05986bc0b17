"""PacketBatch: a columnar chunk of decoded TCP segments, the reader's only output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# TCP flag bits (FIN=1 … AE=0x100), declared once in tcpflags.pxd for the compiled core.
from traceaudit.capture.tcpflags import ACK, AE, CWR, ECE, FIN, PSH, RST, SYN, URG  # noqa: F401

#: Column name -> dtype. Every batch carries exactly these arrays, all of one length.
COLUMNS: dict[str, np.dtype] = {
    "frame": np.dtype(np.int64),        # 1-based frame number, as Wireshark numbers records
    "ts_ns": np.dtype(np.int64),        # capture timestamp, nanoseconds since the Unix epoch
    "ip_version": np.dtype(np.uint8),   # 4 or 6 (of the innermost IP header carrying the TCP)
    "src_hi": np.dtype(np.uint64),      # source address, high 64 bits (IPv4: 0)
    "src_lo": np.dtype(np.uint64),      # source address, low 64 bits (IPv4: ::ffff:a.b.c.d)
    "dst_hi": np.dtype(np.uint64),      # destination address, high 64 bits
    "dst_lo": np.dtype(np.uint64),      # destination address, low 64 bits
    "sport": np.dtype(np.uint16),       # TCP source port
    "dport": np.dtype(np.uint16),       # TCP destination port
    "seq": np.dtype(np.uint32),         # raw (absolute) sequence number
    "ack": np.dtype(np.uint32),         # raw acknowledgment number
    "flags": np.dtype(np.uint16),       # all nine flag bits (FIN=1 … AE=0x100)
    "win": np.dtype(np.uint16),         # raw window field (not scaled)
    "payload_len": np.dtype(np.int32),  # TCP payload bytes, from the IP length (not caplen)
    "frame_len": np.dtype(np.int32),    # original length of the whole frame on the wire
    "mss": np.dtype(np.uint16),         # MSS option value, 0 when absent
    "wscale": np.dtype(np.int8),        # window-scale shift, -1 when absent
    "sack_perm": np.dtype(np.bool_),    # SACK-permitted option present
    "has_ts": np.dtype(np.bool_),       # timestamps option present
    "tsval": np.dtype(np.uint32),       # TSval (0 when absent)
    "tsecr": np.dtype(np.uint32),       # TSecr (0 when absent)
    "tunneled": np.dtype(np.bool_),     # the TCP segment was found inside a tunnel
    "ip_len": np.dtype(np.int32),       # the IP header's total length (IPv4 total length,
                                        # IPv6 payload length + 40) of the innermost IP header
                                        # carrying the TCP, as written (0 stays 0: TSO)
    "app_marks": np.dtype(np.uint8),    # HTTP/1.x messages the segment's captured payload
                                        # starts: requests in the low 4 bits, responses in the
                                        # high 4 (each capped at 15); see ``http_marks``
    # IP-level fields of the innermost IP header carrying the TCP: who sent a reset shows in
    # them (a box on the path writes its own; see tracking/kernel.pyx, RST origin)
    "ttl": np.dtype(np.uint8),          # IPv4 TTL, IPv6 hop limit
    "ip_id": np.dtype(np.int32),        # IPv4 identification (0-65535); -1: none (IPv6)
    "ip_df": np.dtype(np.bool_),        # IPv4 don't-fragment bit (IPv6: False)
}

#: ``app_marks``: requests started (low nibble) and responses started (high nibble).
APP_REQUESTS_MASK = 0x0F
APP_RESPONSES_SHIFT = 4

#: Request-line method tokens (with their space) that start an HTTP/1.x request.
HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                b"CONNECT ", b"TRACE ")


def http_marks(payload: bytes) -> int:
    """The ``app_marks`` value of a segment whose captured TCP payload is ``payload``.

    Only a payload that starts a message (at its first byte: a request with one of
    ``HTTP_METHODS``, a response with ``HTTP/1.``) is looked at; then every ``\\r\\n\\r\\n``
    (the end of a header block) within the captured bytes is followed by a look for another
    message start. Bodies are not parsed (no Content-Length, no chunking): a message that
    follows a body in the same segment is not seen unless the body happens to end with a
    blank line, nor one that begins in the middle of a later segment, nor anything past the
    snap length. The compiled decoder
    (``decode.pyx``, ``http_marks_at``) computes the same value; this is the reference the
    tshark reader and the tests use.
    """
    if not payload or not (0x41 <= payload[0] <= 0x5A):
        return 0
    requests = responses = 0
    at = 0
    while True:
        if payload.startswith(b"HTTP/1.", at):
            responses += 1
        elif any(payload.startswith(m, at) for m in HTTP_METHODS):
            requests += 1
        elif at == 0:
            return 0                # not an HTTP/1.x message start: nothing more is looked at
        nxt = payload.find(b"\r\n\r\n", at)
        if nxt < 0:
            break
        at = nxt + 4
        if at >= len(payload):
            break
    return min(requests, 15) | (min(responses, 15) << APP_RESPONSES_SHIFT)

#: Columns a batch carries only when its reader was asked for them (``open_capture``).
OPTIONAL_COLUMNS: dict[str, np.dtype] = {
    # bits: 1 TCP checksum verifiable and wrong, 2 TCP payload not fully captured (snap
    # length), 4 TCP header incl. options not fully captured, 8 an IPv4 header checksum wrong
    "seg_flags": np.dtype(np.uint8),
}

#: Default number of rows a reader puts in one batch; bounds memory whatever the file size.
DEFAULT_BATCH_ROWS = 1 << 16


@dataclass(frozen=True, slots=True, eq=False)
class PacketBatch:
    """Arrays keyed by ``COLUMNS``; rows are TCP segments in capture order."""

    columns: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        n = None
        for name, dtype in COLUMNS.items():
            arr = self.columns[name]
            if arr.dtype != dtype:
                raise TypeError(f"column {name} has dtype {arr.dtype}, expected {dtype}")
            if n is None:
                n = len(arr)
            elif len(arr) != n:
                raise ValueError(f"column {name} has {len(arr)} rows, expected {n}")
        for name, dtype in OPTIONAL_COLUMNS.items():
            arr = self.columns.get(name)
            if arr is not None and (arr.dtype != dtype or len(arr) != n):
                raise TypeError(f"column {name}: {arr.dtype} x {len(arr)}, expected {dtype} x {n}")

    def __len__(self) -> int:
        return len(self.columns["frame"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @classmethod
    def empty(cls, n: int = 0) -> "PacketBatch":
        return cls({name: np.zeros(n, dtype) for name, dtype in COLUMNS.items()})

    def slice(self, start: int, stop: int) -> "PacketBatch":
        return PacketBatch({k: v[start:stop] for k, v in self.columns.items()})

    @classmethod
    def concat(cls, batches: list["PacketBatch"]) -> "PacketBatch":
        if not batches:
            return cls.empty()
        names = list(COLUMNS) + [k for k in OPTIONAL_COLUMNS
                                 if all(k in b.columns for b in batches)]
        return cls({k: np.concatenate([b.columns[k] for b in batches]) for k in names})
