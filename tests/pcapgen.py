"""A tiny packet and capture-file builder for tests (standard library only).

Builds Ethernet/IPv4/IPv6/TCP frames with correct lengths and checksums, and writes them as
classic pcap (either byte order, micro- or nanosecond) or pcapng (sections, interfaces,
if_tsresol, enhanced / simple / obsolete packet blocks).
"""

from __future__ import annotations

import gzip
import ipaddress
import struct
from dataclasses import dataclass, field

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, AE = 1, 2, 4, 8, 16, 32, 64, 128, 256


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum (0 when verifying a header that includes its own)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_segment(src: str, dst: str, sport: int, dport: int, *, seq: int = 0, ack: int = 0,
                flags: int = ACK, win: int = 65535, payload: bytes = b"", options: bytes = b"",
                bad_checksum: bool = False) -> tuple[bytes, int]:
    """An IP packet (v4 or v6, from the address form) carrying one TCP segment; (bytes, ipver)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if len(options) % 4:
        options += b"\x01" * (4 - len(options) % 4)
    hlen = 20 + len(options)
    off_flags = ((hlen // 4) << 12) | (flags & 0x1FF)
    tcp = struct.pack("!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off_flags,
                      win, 0, 0) + options + payload
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 6, len(tcp))
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", len(tcp), 6)
    cs = internet_checksum(pseudo + tcp) ^ (0x5555 if bad_checksum else 0)
    tcp = tcp[:16] + struct.pack("!H", cs) + tcp[18:]
    if s.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0,
                         s.packed, d.packed)
        ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
        return ip + tcp, 4
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, s.packed, d.packed)
    return ip + tcp, 6


def ethernet(ip_packet: bytes, version: int, vlans: tuple[int, ...] = ()) -> bytes:
    head = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    for vid in vlans:
        head += struct.pack("!HH", 0x8100, vid)
    return head + struct.pack("!H", 0x0800 if version == 4 else 0x86DD) + ip_packet


def mss_ws_sack_ts(mss=1460, ws=7, tsval=1, tsecr=0) -> bytes:
    return (struct.pack("!BBH", 2, 4, mss) + b"\x04\x02" + struct.pack("!BBII", 8, 10, tsval, tsecr)
            + b"\x01" + struct.pack("!BBB", 3, 3, ws))


@dataclass
class Frame:
    ts_ns: int
    data: bytes
    orig_len: int | None = None
    interface: int = 0


@dataclass
class Conversation:
    """Builds a TCP exchange between a client and a server with coherent seq/ack numbers."""

    client: str = "10.0.0.1"
    server: str = "10.0.0.2"
    cport: int = 40000
    sport: int = 80
    t0_ns: int = 1_700_000_000_000_000_000
    gap_ns: int = 1_000_000
    cisn: int = 1000
    sisn: int = 5000
    frames: list[Frame] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.t = self.t0_ns
        self.nxt = {"c": self.cisn, "s": self.sisn}

    def send(self, who: str, flags: int, payload: bytes = b"", *, seq: int | None = None,
             ack: int | None = None, options: bytes = b"", advance: bool = True,
             gap_ns: int | None = None, bad_checksum: bool = False) -> "Conversation":
        other = "s" if who == "c" else "c"
        src, dst = (self.client, self.server) if who == "c" else (self.server, self.client)
        sp, dp = (self.cport, self.sport) if who == "c" else (self.sport, self.cport)
        s = self.nxt[who] if seq is None else seq
        a = self.nxt[other] if ack is None else ack
        pkt, ver = tcp_segment(src, dst, sp, dp, seq=s, ack=a if flags & ACK else 0, flags=flags,
                               payload=payload, options=options, bad_checksum=bad_checksum)
        self.t += self.gap_ns if gap_ns is None else gap_ns
        self.frames.append(Frame(self.t, ethernet(pkt, ver)))
        if advance and seq is None:
            self.nxt[who] = (s + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        return self

    def handshake(self) -> "Conversation":
        return (self.send("c", SYN, options=mss_ws_sack_ts()).send("s", SYN | ACK)
                .send("c", ACK))

    def close_by(self, who: str) -> "Conversation":
        other = "s" if who == "c" else "c"
        return self.send(who, FIN | ACK).send(other, FIN | ACK).send(who, ACK)


# -- file writers ----------------------------------------------------------------------------
def pcap_bytes(frames: list[Frame], *, linktype: int = 1, big_endian: bool = False,
               nano: bool = False, snaplen: int = 262144) -> bytes:
    o = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for f in frames:
        sec, rem = divmod(f.ts_ns, 1_000_000_000)
        frac = rem if nano else rem // 1000
        data = f.data[:snaplen]
        out.append(struct.pack(o + "IIII", sec, frac, len(data), f.orig_len or len(f.data)) + data)
    return b"".join(out)


def _block(o: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(o + "II", btype, n) + body + struct.pack(o + "I", n)


def _options(o: str, opts: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for code, val in opts:
        out += struct.pack(o + "HH", code, len(val)) + val + b"\0" * (-len(val) % 4)
    return out + (struct.pack(o + "HH", 0, 0) if opts else b"")


def pcapng_section(frames: list[Frame], *, big_endian: bool = False,
                   interfaces: list[tuple[int, int | None]] = ((1, None),),
                   block: str = "epb") -> bytes:
    """One section. ``interfaces`` = [(linktype, tsresol byte or None)]; ``block`` = epb|spb|pb."""
    o = ">" if big_endian else "<"
    out = [_block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    resols = []
    for link, resol in interfaces:
        opts = [(9, bytes([resol]))] if resol is not None else []
        out.append(_block(o, 1, struct.pack(o + "HHI", link, 0, 0) + _options(o, opts)))
        if resol is None:
            resols.append(10 ** 6)
        elif resol & 0x80:
            resols.append(1 << (resol & 0x7F))
        else:
            resols.append(10 ** resol)
    for f in frames:
        if block == "spb":
            out.append(_block(o, 3, struct.pack(o + "I", f.orig_len or len(f.data)) + f.data))
            continue
        units = f.ts_ns * resols[f.interface] // 1_000_000_000
        head = struct.pack(o + "IIIII" if block == "epb" else o + "HHIIII", *(
            (f.interface, units >> 32, units & 0xFFFFFFFF, len(f.data), f.orig_len or len(f.data))
            if block == "epb" else
            (f.interface, 0, units >> 32, units & 0xFFFFFFFF, len(f.data),
             f.orig_len or len(f.data))))
        out.append(_block(o, 6 if block == "epb" else 2, head + f.data))
    return b"".join(out)


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def replayed(pcap: bytes, shift_s: float, copies: int = 2) -> bytes:
    """A classic pcap followed by ``copies - 1`` copies of its own records, each shifted
    ``shift_s`` seconds later than the one before: what merging runs of a deterministic test
    harness (same 4-tuples, same ISNs) produces. Keeps the file's byte order and resolution."""
    o = "<" if pcap[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    unit = 10**9 if struct.unpack(o + "I", pcap[:4])[0] == 0xA1B23C4D else 10**6
    records, off = [], 24
    while off + 16 <= len(pcap):
        sec, frac, incl, orig = struct.unpack(o + "IIII", pcap[off:off + 16])
        records.append((sec * unit + frac, pcap[off + 16:off + 16 + incl], orig))
        off += 16 + incl
    out = [pcap[:24]]
    for k in range(copies):
        shift = round(k * shift_s * unit)
        for t, data, orig in records:
            sec, frac = divmod(t + shift, unit)
            out.append(struct.pack(o + "IIII", sec, frac, len(data), orig) + data)
    return b"".join(out)
