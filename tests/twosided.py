"""Two captures of the same TCP traffic, taken on either side of a (translating) router, for
``traceaudit compare`` tests: every packet is written to the capture beside its sender at
send time and, unless the path dropped it, to the other one a path delay later; a packet the
path created appears only beside its receiver. Capture ``a`` is the client's side; ``b``'s
clock runs ``offset_ns`` ahead of ``a``'s. The truth (which frames of which file were dropped
or created) is kept as the frames are made.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pcapgen import (ACK, FIN, SYN, Frame, ethernet, internet_checksum, pcap_bytes,
                     tcp_segment)


def ts_option(tsval: int, tsecr: int) -> bytes:
    return b"\x01\x01" + struct.pack("!BBII", 8, 10, tsval, tsecr)


@dataclass
class Path:
    """The two vantage points' frames, shared by every connection crossing the router."""

    offset_ns: int = 0
    delay_ns: int = 40_000
    a: list[Frame] = field(default_factory=list)
    b: list[Frame] = field(default_factory=list)
    #: (side, Frame) of every frame the path dropped (seen only at its sender's side) or
    #: created (seen only at its receiver's side)
    dropped: list[tuple[str, Frame]] = field(default_factory=list)
    created: list[tuple[str, Frame]] = field(default_factory=list)

    def write(self, dir_path) -> tuple:
        """Write a.pcap and b.pcap (frames in time order); return (path a, path b, truth):
        truth = {"dropped": {(side, frame number)}, "created": {...}}."""
        out = []
        numbers = {}
        for side, frames in (("a", self.a), ("b", self.b)):
            frames.sort(key=lambda f: f.ts_ns)
            for i, f in enumerate(frames, 1):
                numbers[id(f)] = (side, i)
            p = dir_path / f"{side}.pcap"
            p.write_bytes(pcap_bytes(frames, nano=True))
            out.append(p)
        truth = {kind: {numbers[id(f)] for _, f in getattr(self, kind)}
                 for kind in ("dropped", "created")}
        return out[0], out[1], truth


@dataclass
class Connection:
    """One connection across ``path``: ``client`` behind the router (seen as ``nat`` on b's
    side when given), ``server`` beyond it; ``client_side`` "a" unless the client is on b's
    side (a connection opened from the far network)."""

    path: Path
    client: tuple[str, int] = ("10.21.1.2", 40312)
    server: tuple[str, int] = ("10.21.2.1", 80)
    nat: tuple[str, int] | None = None
    cisn: int = 1_000_000
    sisn: int = 7_000_000
    t_ns: int = 1_700_000_000_000_000_000
    gap_ns: int = 2_000_000
    timestamps: bool = True
    client_side: str = "a"
    #: added to b's time of the client's packets (timestamping noise at b)
    skew_ns: int = 0

    def __post_init__(self) -> None:
        self.nxt = {"c": self.cisn, "s": self.sisn}
        self.tsval = {"c": 50_000 + self.cisn % 977, "s": 900_000 + self.sisn % 991}
        self.last_seen_ts = {"c": 0, "s": 0}
        self.ip_id = {"c": 100 + self.cisn % 5000, "s": 20_000 + self.sisn % 5000}

    def send(self, who: str, flags: int, payload: bytes = b"", *, fate: str = "delivered",
             seq: int | None = None, ack: int | None = None, gap_ns: int | None = None,
             advance: bool = True, late_ns: int = 0, wire_mss: int = 0) -> "Connection":
        """One segment from ``who`` ('c' or 's'); ``fate``: delivered, dropped or created;
        ``late_ns``: extra path delay (reordering); ``wire_mss``: the sender's capture sees
        one large segment (TSO) and the other capture segments of this size."""
        other = "s" if who == "c" else "c"
        self.t_ns += self.gap_ns if gap_ns is None else gap_ns
        s = self.nxt[who] if seq is None else seq
        a = self.nxt[other] if ack is None else ack
        options = b""
        if self.timestamps and fate != "created":
            self.tsval[who] += 1
            options = ts_option(self.tsval[who], self.last_seen_ts[who])
            self.last_seen_ts[other] = self.tsval[who]
        self.ip_id[who] += 1
        sender_side = self.client_side if who == "c" else _other(self.client_side)
        for side in ("a", "b"):
            if fate == "dropped" and side != sender_side:
                continue
            if fate == "created" and side == sender_side:
                continue
            pieces = [(s, flags, payload)]
            if wire_mss and side != sender_side:
                pieces = [((s + i) & 0xFFFFFFFF,
                           flags if i + wire_mss >= len(payload) else flags & ~8,
                           payload[i:i + wire_mss]) for i in range(0, len(payload), wire_mss)]
            for k, (piece_seq, piece_flags, piece) in enumerate(pieces):
                frame = self._frame(who, side, piece_seq, a, piece_flags, piece, options,
                                    at_sender=side == sender_side, late_ns=late_ns + k * 1000)
                getattr(self.path, side).append(frame)
            if fate != "delivered":
                getattr(self.path, fate).append((side, frame))
        if advance and seq is None and fate != "created":
            self.nxt[who] = (s + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        return self

    def _frame(self, who, side, seq, ack, flags, payload, options, at_sender,
               late_ns=0) -> Frame:
        client = self.client
        if self.nat is not None and side != self.client_side:
            client = self.nat
        src, dst = (client, self.server) if who == "c" else (self.server, client)
        pkt, ver = tcp_segment(src[0], dst[0], src[1], dst[1], seq=seq,
                               ack=ack if flags & ACK else 0, flags=flags, payload=payload,
                               options=options)
        if ver == 4:                # the sender's IP ID counter, kept by the path
            head = bytearray(pkt[:20])
            head[4:6] = struct.pack("!H", self.ip_id[who] & 0xFFFF)
            head[10:12] = b"\0\0"
            head[10:12] = struct.pack("!H", internet_checksum(bytes(head)))
            pkt = bytes(head) + pkt[20:]
        t = self.t_ns + (0 if at_sender else self.path.delay_ns + late_ns)
        if side == "b":
            t += self.path.offset_ns + (self.skew_ns if who == "c" else 0)
        return Frame(t, ethernet(pkt, ver))

    def handshake(self) -> "Connection":
        return self.send("c", SYN).send("s", SYN | ACK).send("c", ACK)

    def exchange(self, request: int = 100, response: int = 1400) -> "Connection":
        return (self.send("c", ACK | 8, b"q" * request).send("s", ACK | 8, b"r" * response)
                .send("c", ACK))

    def close(self) -> "Connection":
        return self.send("c", FIN | ACK).send("s", FIN | ACK).send("c", ACK)


def _other(side: str) -> str:
    return "b" if side == "a" else "a"
