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
from typing import Callable

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
                bad_checksum: bool = False, ttl: int = 64, ident: int = 1,
                df: bool = True) -> tuple[bytes, int]:
    """An IP packet (v4 or v6, from the address form) carrying one TCP segment; (bytes, ipver).
    ``ttl`` is the TTL or hop limit; ``ident`` and ``df`` the IPv4 ID and DF bit."""
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
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ident & 0xFFFF,
                         0x4000 if df else 0, ttl, 6, 0, s.packed, d.packed)
        ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
        return ip + tcp, 4
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, ttl, s.packed, d.packed)
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
    #: turns (IP packet, version, sender 'c'/'s') into the frame's bytes (default: Ethernet)
    wrap: Callable[[bytes, int, str], bytes] | None = None
    #: each side's TTL / hop limit as the capture sees it ('c'/'s'; default 64)
    ttl: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.t = self.t0_ns
        self.nxt = {"c": self.cisn, "s": self.sisn}

    def send(self, who: str, flags: int, payload: bytes = b"", *, seq: int | None = None,
             ack: int | None = None, options: bytes = b"", advance: bool = True,
             gap_ns: int | None = None, bad_checksum: bool = False, ttl: int | None = None,
             ident: int = 1, df: bool = True) -> "Conversation":
        other = "s" if who == "c" else "c"
        src, dst = (self.client, self.server) if who == "c" else (self.server, self.client)
        sp, dp = (self.cport, self.sport) if who == "c" else (self.sport, self.cport)
        s = self.nxt[who] if seq is None else seq
        a = self.nxt[other] if ack is None else ack
        pkt, ver = tcp_segment(src, dst, sp, dp, seq=s, ack=a if flags & ACK else 0, flags=flags,
                               payload=payload, options=options, bad_checksum=bad_checksum,
                               ttl=self.ttl.get(who, 64) if ttl is None else ttl, ident=ident,
                               df=df)
        self.t += self.gap_ns if gap_ns is None else gap_ns
        data = self.wrap(pkt, ver, who) if self.wrap else ethernet(pkt, ver)
        self.frames.append(Frame(self.t, data))
        if advance and seq is None:
            self.nxt[who] = (s + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        return self

    def handshake(self) -> "Conversation":
        return (self.send("c", SYN, options=mss_ws_sack_ts()).send("s", SYN | ACK)
                .send("c", ACK))

    def close_by(self, who: str) -> "Conversation":
        other = "s" if who == "c" else "c"
        return self.send(who, FIN | ACK).send(other, FIN | ACK).send(who, ACK)


# -- IP header changes ----------------------------------------------------------------------
def ipv4_with_options(ip_packet: bytes, options: bytes, *, dst: str | None = None) -> bytes:
    """The IPv4 packet with ``options`` (padded to 4 bytes with EOL) in its header, lengths and
    header checksum redone; ``dst`` replaces the header's destination (the TCP checksum is
    left as it was: for a source route it covers the final hop, as a sender computes it)."""
    options += b"\0" * (-len(options) % 4)
    ihl = 20 + len(options)
    head = bytearray(ip_packet[:20])
    head[0] = 0x40 | (ihl // 4)
    head[2:4] = struct.pack("!H", len(ip_packet) + len(options))
    if dst is not None:
        head[16:20] = ipaddress.ip_address(dst).packed
    head[10:12] = b"\0\0"
    head = bytes(head) + options
    head = head[:10] + struct.pack("!H", internet_checksum(head)) + head[12:]
    return head + ip_packet[20:]


def source_route(hops: list[str], *, strict: bool = False, pointer: int = 4) -> bytes:
    """An RFC 791 loose (131) or strict (137) source route option: route data = ``hops``."""
    body = b"".join(ipaddress.ip_address(h).packed for h in hops)
    return bytes([137 if strict else 131, 3 + len(body), pointer]) + body


def with_data_offset(ip_packet: bytes, words: int) -> bytes:
    """The packet with its TCP data offset set to ``words`` (checksums left alone)."""
    ihl = (ip_packet[0] & 0x0F) * 4 if ip_packet[0] >> 4 == 4 else 40
    out = bytearray(ip_packet)
    out[ihl + 12] = (words << 4) | (out[ihl + 12] & 0x0F)
    return bytes(out)


def ipv4_packet(src: str, dst: str, proto: int, payload: bytes, *, ident: int = 1,
                frag: int = 0x4000) -> bytes:
    """An IPv4 header (no options, checksum set) over ``payload``; ``frag`` = flags/offset."""
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0,
                       ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return head[:10] + struct.pack("!H", internet_checksum(head)) + head[12:] + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP header (checksum 0: not computed) over ``payload``."""
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4_fragments(ip_packet: bytes, size: int = 8, *, ident: int = 0x4242) -> list[bytes]:
    """The IPv4 packet cut into fragments of ``size`` payload bytes (a multiple of 8; the last
    may be shorter), in order, each with its own header (MF, offset, length, checksum)."""
    ihl = (ip_packet[0] & 0x0F) * 4
    head, data = ip_packet[:ihl], ip_packet[ihl:]
    out = []
    for off in range(0, len(data), size):
        part = data[off:off + size]
        more = off + size < len(data)
        out.append(ipv4_fragment(head, part, off, more, ident=ident))
    return out


def ipv4_fragment(head: bytes, part: bytes, offset: int, more: bool, *,
                  ident: int = 0x4242) -> bytes:
    """One IPv4 fragment: ``head`` (the datagram's header) with the length, id, MF, the
    ``offset`` (bytes, a multiple of 8) and checksum set, over ``part``."""
    h = bytearray(head)
    h[2:4] = struct.pack("!H", len(head) + len(part))
    h[4:6] = struct.pack("!H", ident)
    h[6:8] = struct.pack("!H", (0x2000 if more else 0) | (offset // 8))
    h[10:12] = b"\0\0"
    h[10:12] = struct.pack("!H", internet_checksum(bytes(h)))
    return bytes(h) + part


def ipv6_fragments(ip_packet: bytes, size: int = 8, *, ident: int = 0x42424242) -> list[bytes]:
    """The IPv6 packet (no extension headers) cut into fragments of ``size`` payload bytes
    behind a fragment header (RFC 8200 4.5)."""
    nxt, data = ip_packet[6], ip_packet[40:]
    out = []
    for off in range(0, len(data), size):
        part = data[off:off + size]
        more = off + size < len(data)
        out.append(ipv6_fragment(ip_packet[:40], nxt, part, off, more, ident=ident))
    return out


def ipv6_fragment(head: bytes, nxt: int, part: bytes, offset: int, more: bool, *,
                  ident: int = 0x42424242) -> bytes:
    h = bytearray(head)
    h[4:6] = struct.pack("!H", 8 + len(part))
    h[6] = 44
    return bytes(h) + struct.pack("!BBHI", nxt, 0, offset | (1 if more else 0), ident) + part


# -- link layers and encapsulations: (IP packet, version) -> bytes ---------------------------
def ethertype(version: int) -> int:
    return 0x0800 if version == 4 else 0x86DD


def cisco_hdlc(ip_packet: bytes, version: int, address: int = 0x0F) -> bytes:
    """Cisco HDLC (link type 104): address 0x0F unicast / 0x8F broadcast, control 0."""
    return struct.pack("!BBH", address, 0, ethertype(version)) + ip_packet


def llc_snap(ip_packet: bytes, version: int) -> bytes:
    return b"\xaa\xaa\x03\0\0\0" + struct.pack("!H", ethertype(version)) + ip_packet


def wlan_data(ip_packet: bytes, version: int, *, qos: bool = False, to_ds: bool = True,
              wds: bool = False, htc: bool = False, protected: bool = False) -> bytes:
    """An 802.11 data frame (link type 105): frame control, duration, 3 or 4 addresses,
    sequence control, [QoS control, [HT control]], then LLC/SNAP and the packet."""
    fc0 = 0x88 if qos else 0x08
    fc1 = 0x03 if wds else (0x01 if to_ds else 0x02)
    fc1 |= (0x80 if htc else 0) | (0x40 if protected else 0)
    addrs = b"".join(bytes([0x02, 0, 0, 0, 0, i]) for i in range(4 if wds else 3))
    head = bytes([fc0, fc1]) + b"\0\0" + addrs + b"\x10\x00"
    if qos:
        head += b"\x00\x00" + (b"\0\0\0\0" if htc else b"")
    return head + llc_snap(ip_packet, version)


def radiotap(frame: bytes, *, fcs: bool = True) -> bytes:
    """A radiotap header (link type 127): version 0, length, present = flags + rate + channel;
    with ``fcs`` the flags say the 802.11 frame ends in a 4-byte FCS, which is appended."""
    present = 0x0000000E                  # flags, rate, channel
    fields = bytes([0x10 if fcs else 0, 0x0C]) + struct.pack("<HH", 2437, 0x00A0)
    head = struct.pack("<BBHI", 0, 0, 8 + len(fields), present) + fields
    return head + frame + (b"\xde\xad\xbe\xef" if fcs else b"")


def nflog(ip_packet: bytes, version: int, *, big_endian: bool = False) -> bytes:
    """A Linux NFLOG record (link type 239): family, version 0, resource id (big-endian), then
    TLVs in the host's byte order, each padded to 4 bytes: packet header (type 1), prefix
    (type 10), payload (type 9)."""
    o = ">" if big_endian else "<"

    def tlv(t: int, v: bytes) -> bytes:
        raw = struct.pack(o + "HH", 4 + len(v), t) + v
        return raw + b"\0" * (-len(raw) % 4)

    head = struct.pack("!BBH", 2 if version == 4 else 10, 0, 7)
    return (head + tlv(1, struct.pack("!HBB", ethertype(version), 3, 0)) + tlv(10, b"ta\0")
            + tlv(9, ip_packet))


def arcnet(ip_packet: bytes, version: int, *, rfc1051: bool = False) -> bytes:
    """ARCNET (link type 129, which tshark reads as Linux ARCNET): source, destination, 2-byte
    offset, protocol ID; RFC 1201 protocols add a split flag and a sequence number."""
    if rfc1051:
        return bytes([0x01, 0x02, 0, 0, 240]) + ip_packet
    return bytes([0x01, 0x02, 0, 0, 212 if version == 4 else 196, 0, 0x12, 0x34]) + ip_packet


def ipoib(ip_packet: bytes, version: int) -> bytes:
    """IP over InfiniBand (link type 242, as tshark reads it): a 40-byte global route header
    (version 6, source QPN, source and destination GIDs), then RFC 4391 section 6's 4 bytes:
    ethertype, reserved."""
    grh = bytes([0x60, 0, 0, 0, 0, 0, 0, 0x48]) + bytes(range(1, 33))
    return grh + struct.pack("!HH", ethertype(version), 0) + ip_packet


def ppp(ip_packet: bytes, version: int, *, hdlc: bool = True) -> bytes:
    """PPP (link types 9/50; also inside L2TP and GRE): [ff 03] and the 2-byte protocol."""
    return (b"\xff\x03" if hdlc else b"") + struct.pack("!H", 0x21 if version == 4 else 0x57) \
        + ip_packet


def l2tp_data(ppp_frame: bytes, *, length: bool = True, sequence: bool = True,
              offset: int | None = 2) -> bytes:
    """An L2TPv2 data message header (RFC 2661 3.1) over a PPP frame."""
    flags = 0x0002 | (0x4000 if length else 0) | (0x0800 if sequence else 0) \
        | (0x0200 if offset is not None else 0)
    body = struct.pack("!HH", 0x1234, 0x5678)
    if sequence:
        body += struct.pack("!HH", 3, 4)
    if offset is not None:
        body += struct.pack("!H", offset) + b"\0" * offset
    total = 2 + (2 if length else 0) + len(body) + len(ppp_frame)
    return struct.pack("!H", flags) + (struct.pack("!H", total) if length else b"") + body \
        + ppp_frame


def gre(payload: bytes, proto: int, *, key: int | None = None) -> bytes:
    """A GRE header (RFC 2784/2890) with protocol type ``proto`` over ``payload``."""
    flags = 0x2000 if key is not None else 0
    return struct.pack("!HH", flags, proto) + (struct.pack("!I", key) if key is not None
                                               else b"") + payload


def wccp_redirect(ip_packet: bytes) -> bytes:
    """A WCCPv2 redirect header (4 bytes: type, reserved, service id, alternate bucket,
    primary bucket) ahead of the redirected IPv4 packet, as carried in GRE type 0x883E."""
    return bytes([0x00, 0x00, 0x5A, 0x00]) + ip_packet


def outer_ipv4(inner: bytes, proto: int, *, src: str = "192.0.2.1",
               dst: str = "192.0.2.2") -> bytes:
    """``inner`` inside an outer IPv4 header, in an Ethernet frame."""
    return ethernet(ipv4_packet(src, dst, proto, inner), 4)


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
