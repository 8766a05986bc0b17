"""The built-in reader: containers, byte orders, timestamp resolutions, link layers, options."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import pcapgen as g
from conftest import needs_tshark, tshark_fields
from traceaudit.capture import read_all
from traceaudit.capture.batch import COLUMNS


def conversation() -> g.Conversation:
    conv = g.Conversation(t0_ns=1_700_000_000_123_456_789, gap_ns=1_234_567)
    conv.handshake().send("c", g.ACK | g.PSH, b"GET / HTTP/1.0\r\n\r\n")
    conv.send("s", g.ACK | g.PSH, b"x" * 700).send("c", g.ACK).close_by("c")
    return conv


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def columns_equal(a, b, skip=()):
    for name in COLUMNS:
        if name in skip:
            continue
        assert np.array_equal(a[name], b[name]), name


def test_decodes_the_fields_it_was_given(tmp_path):
    conv = conversation()
    batch, stats = read_all(write(tmp_path, "c.pcap", g.pcap_bytes(conv.frames, nano=True)))
    assert stats.packets == len(conv.frames) == stats.tcp_packets == len(batch)
    assert batch["frame"].tolist() == list(range(1, len(conv.frames) + 1))
    assert batch["ts_ns"].tolist() == [f.ts_ns for f in conv.frames]
    assert batch["flags"][:3].tolist() == [g.SYN, g.SYN | g.ACK, g.ACK]
    assert batch["seq"][0] == 1000 and batch["seq"][1] == 5000 and batch["ack"][1] == 1001
    assert batch["payload_len"].tolist()[3:5] == [18, 700]
    assert batch["mss"][0] == 1460 and batch["wscale"][0] == 7 and batch["sack_perm"][0]
    assert batch["has_ts"][0] and batch["tsval"][0] == 1 and not batch["has_ts"][1]
    assert batch["wscale"][1] == -1 and batch["mss"][1] == 0
    assert batch["sport"][0] == 40000 and batch["dport"][0] == 80
    assert (batch["ip_version"] == 4).all() and not batch["tunneled"].any()
    assert batch["src_lo"][0] == (0xFFFF_0000_0000 | 0x0A000001)
    assert batch["frame_len"].tolist() == [len(f.data) for f in conv.frames]


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_classic_pcap_byte_orders_and_resolutions(tmp_path, big_endian, nano):
    conv = conversation()
    ref, _ = read_all(write(tmp_path, "ref.pcap", g.pcap_bytes(conv.frames, nano=True)))
    got, stats = read_all(write(tmp_path, "x.pcap", g.pcap_bytes(conv.frames, nano=nano,
                                                                big_endian=big_endian)))
    assert stats.format == "pcap"
    columns_equal(got, ref, skip=("ts_ns",))
    expect = ref["ts_ns"] if nano else ref["ts_ns"] // 1000 * 1000
    assert np.array_equal(got["ts_ns"], expect)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("resol", [None, 9, 3, 0x80 | 20])
def test_pcapng_enhanced_blocks_with_tsresol(tmp_path, big_endian, resol):
    conv = conversation()
    ref, _ = read_all(write(tmp_path, "ref.pcap", g.pcap_bytes(conv.frames, nano=True)))
    data = g.pcapng_section(conv.frames, big_endian=big_endian, interfaces=[(1, resol)])
    got, stats = read_all(write(tmp_path, "x.pcapng", data))
    assert stats.format == "pcapng"
    columns_equal(got, ref, skip=("ts_ns",))
    tick = {None: 1000, 9: 1, 3: 1_000_000, 0x80 | 20: 954}[resol]
    assert np.all(np.abs(got["ts_ns"] - ref["ts_ns"]) <= tick)


def test_pcapng_sections_interfaces_and_block_kinds(tmp_path):
    """Two sections of different byte order, an interface per link type, SPB and obsolete PB."""
    conv = conversation()
    half = len(conv.frames) // 2
    first = [g.Frame(f.ts_ns, f.data, interface=i % 2) for i, f in enumerate(conv.frames[:half])]
    # interface 1 is raw IP (101): strip the Ethernet header of its frames
    first = [g.Frame(f.ts_ns, f.data[14:] if f.interface else f.data, interface=f.interface)
             for f in first]
    data = g.pcapng_section(first, interfaces=[(1, None), (101, 9)])
    data += g.pcapng_section(conv.frames[half:half + 2], big_endian=True, block="pb")
    data += g.pcapng_section(conv.frames[half + 2:], block="spb")
    got, stats = read_all(write(tmp_path, "multi.pcapng", data))
    ref, _ = read_all(write(tmp_path, "ref.pcap", g.pcap_bytes(conv.frames, nano=True)))
    assert stats.link_types == [1, 101]
    columns_equal(got, ref, skip=("ts_ns", "frame_len"))
    # raw-IP frames are 14 bytes shorter; simple packet blocks carry no time (previous one kept)
    assert got["frame_len"][1] == ref["frame_len"][1] - 14
    assert got["ts_ns"][-1] == got["ts_ns"][half + 1]


def test_gzip_is_read_transparently(tmp_path):
    conv = conversation()
    plain, _ = read_all(write(tmp_path, "a.pcap", g.pcap_bytes(conv.frames)))
    gz, stats = read_all(write(tmp_path, "a.pcap.gz", g.gzipped(g.pcap_bytes(conv.frames))))
    assert stats.format == "pcap.gz"
    columns_equal(gz, plain)


def test_vlan_ipv6_and_snaplen(tmp_path):
    pkt6, _ = g.tcp_segment("2001:db8::1", "2001:db8::2", 5555, 443, seq=7, flags=g.SYN)
    pkt4, _ = g.tcp_segment("192.0.2.1", "192.0.2.2", 5555, 443, seq=9, flags=g.ACK,
                            payload=b"z" * 1000)
    frames = [g.Frame(1_000, g.ethernet(pkt6, 6, vlans=(10, 20))),
              g.Frame(2_000, g.ethernet(pkt4, 4, vlans=(30,)))]
    batch, stats = read_all(write(tmp_path, "v.pcap", g.pcap_bytes(frames, snaplen=80)))
    assert batch["ip_version"].tolist() == [6, 4]
    assert batch["src_hi"][0] == 0x20010DB800000000 and batch["src_lo"][0] == 1
    # payload length comes from the IP header even though only 80 bytes were captured
    assert batch["payload_len"][1] == 1000 and batch["frame_len"][1] == len(frames[1].data)


def test_checksums_verified_only_on_request(tmp_path):
    conv = g.Conversation()
    conv.handshake().send("c", g.ACK | g.PSH, b"hello", bad_checksum=True)
    p = write(tmp_path, "cs.pcap", g.pcap_bytes(conv.frames))
    assert len(read_all(p)[0]) == 4
    batch, stats = read_all(p, verify_checksums=True)
    assert len(batch) == 3 and any("wrong checksum" in w for w in stats.warnings)


def test_non_first_fragments_are_counted_and_skipped(tmp_path):
    pkt, _ = g.tcp_segment("10.0.0.1", "10.0.0.2", 1, 2, payload=b"a" * 64)
    frag = bytearray(pkt)
    frag[6:8] = struct.pack("!H", 0x0008)       # fragment offset 8 (64 bytes), no DF
    frames = [g.Frame(1, g.ethernet(pkt, 4)), g.Frame(2, g.ethernet(bytes(frag), 4))]
    batch, stats = read_all(write(tmp_path, "f.pcap", g.pcap_bytes(frames)))
    assert len(batch) == 1 and stats.packets == 2
    assert any("fragment" in w for w in stats.warnings)


@needs_tshark
def test_generated_files_agree_with_tshark(tmp_path):
    conv = conversation()
    p = write(tmp_path, "t.pcapng", g.pcapng_section(conv.frames, big_endian=True,
                                                    interfaces=[(1, 9)]))
    batch, _ = read_all(p)
    rows = tshark_fields(p, ["frame.number", "frame.time_epoch", "tcp.seq_raw", "tcp.ack_raw",
                             "tcp.flags", "tcp.len"])
    assert [int(r[0]) for r in rows] == batch["frame"].tolist()
    assert [int(r[1].replace(".", "")) for r in rows] == batch["ts_ns"].tolist()
    assert [int(r[2]) for r in rows] == batch["seq"].tolist()
    assert [int(r[4], 16) for r in rows] == batch["flags"].tolist()
    assert [int(r[5]) for r in rows] == batch["payload_len"].tolist()


def test_seg_flags_only_on_request(tmp_path):
    conv = conversation()
    p = write(tmp_path, "plain.pcap", g.pcap_bytes(conv.frames))
    assert "seg_flags" not in read_all(p)[0].columns
    batch, _ = read_all(p, seg_flags=True)
    assert batch["seg_flags"].dtype == np.uint8 and not batch["seg_flags"].any()
    plain, _ = read_all(p)
    columns_equal(batch, plain)                 # the other columns are not affected


def test_seg_flags_bits(tmp_path):
    ok, _ = g.tcp_segment("192.0.2.1", "192.0.2.2", 5555, 443, seq=1, payload=b"a" * 10)
    bad_tcp, _ = g.tcp_segment("192.0.2.1", "192.0.2.2", 5555, 443, seq=11, payload=b"b" * 10,
                               bad_checksum=True)
    bad_ip = bytearray(g.tcp_segment("192.0.2.1", "192.0.2.2", 5555, 443, seq=21)[0])
    bad_ip[10] ^= 0x11                          # IPv4 header checksum
    long_, _ = g.tcp_segment("192.0.2.1", "192.0.2.2", 5555, 443, seq=31, payload=b"c" * 400)
    opts, _ = g.tcp_segment("192.0.2.1", "192.0.2.2", 5555, 443, seq=41, flags=g.SYN,
                            options=g.mss_ws_sack_ts())
    v6_bad, _ = g.tcp_segment("2001:db8::1", "2001:db8::2", 5555, 443, seq=1, payload=b"d",
                              bad_checksum=True)
    frames = [g.Frame(1_000 * (i + 1), g.ethernet(pkt, v))
              for i, (pkt, v) in enumerate([(ok, 4), (bad_tcp, 4), (bytes(bad_ip), 4),
                                            (long_, 4), (opts, 4), (v6_bad, 6)])]
    data = g.pcap_bytes(frames, snaplen=200)
    p = write(tmp_path, "bits.pcap", data)
    batch, _ = read_all(p, seg_flags=True)
    assert batch["seg_flags"].tolist() == [0, 1, 8, 2, 0, 1]
    # a snap length inside the TCP options cuts the header (and whatever payload follows)
    cut = write(tmp_path, "cut.pcap", g.pcap_bytes(frames[4:5], snaplen=14 + 20 + 24))
    assert read_all(cut, seg_flags=True)[0]["seg_flags"].tolist() == [4]
    # bit 1 marks exactly what --verify-checksums drops
    kept, _ = read_all(p, verify_checksums=True)
    marked = batch["frame"][(batch["seg_flags"] & 1) == 0]
    assert kept["frame"].tolist() == marked.tolist()


def test_seg_flags_survive_concat(tmp_path):
    conv = conversation()
    p = write(tmp_path, "c.pcap", g.pcap_bytes(conv.frames))
    from traceaudit.capture import open_capture
    from traceaudit.capture.batch import PacketBatch
    parts = list(open_capture(p, seg_flags=True, batch_rows=2).batches())
    assert len(parts) > 1 and all("seg_flags" in b.columns for b in parts)
    whole = PacketBatch.concat(parts)
    assert len(whole["seg_flags"]) == len(whole)


def _plain_and_tagged_cases() -> list[g.Frame]:
    """Frames the reader's plain-Ethernet fast path takes (or must hand back to the general
    loop): options, padding, TSO lengths, fragments, bad checksums, short snap lengths."""
    frames = []
    t = 1_700_000_000_000_000_000

    def add(ip: bytes, ver: int, pad: int = 0, orig: int | None = None, cut: int | None = None):
        data = g.ethernet(ip, ver) + b"\0" * pad
        frames.append(g.Frame(t + len(frames) * 1000, data[:cut] if cut else data, orig))

    opts = g.mss_ws_sack_ts()
    for src, dst in (("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")):
        add(*g.tcp_segment(src, dst, 40000, 80, seq=7, flags=g.SYN, options=opts))
        add(*g.tcp_segment(src, dst, 40000, 80, seq=8, ack=9, payload=b"hello"))
        add(*g.tcp_segment(src, dst, 40000, 80, seq=8, ack=9), pad=6)          # padded
        add(*g.tcp_segment(src, dst, 40000, 80, seq=8, ack=9, payload=b"y" * 300,
                           bad_checksum=True))
        add(*g.tcp_segment(src, dst, 40000, 80, payload=b"z" * 200), cut=70)   # snap length
        add(*g.tcp_segment(src, dst, 40000, 80, payload=b"z" * 200), cut=50)   # header cut
        ip, ver = g.tcp_segment(src, dst, 40000, 80, payload=b"w" * 1000)
        zero = (ip[:2] + b"\0\0" + ip[4:]) if ver == 4 else (ip[:4] + b"\0\0" + ip[6:])
        add(zero, ver, orig=14 + len(ip), cut=120)                              # TSO: length 0
        # the IP length ends inside the TCP options (what follows is padding): not parsed
        ip, ver = g.tcp_segment(src, dst, 40000, 80, seq=9, options=opts)
        short = bytearray(ip)
        if ver == 4:
            short[2:4] = (40).to_bytes(2, "big")
        else:
            short[4:6] = (20).to_bytes(2, "big")
        add(bytes(short), ver)
        bogus = bytearray(ip)
        bogus[(20 if ver == 4 else 40) + 12] = 0x30                             # data offset 3
        add(bytes(bogus), ver)
    ip, _ = g.tcp_segment("10.0.0.1", "10.0.0.2", 40000, 80, payload=b"f" * 64)
    add(ip[:6] + b"\x20\x00" + ip[8:], 4)                                       # first fragment
    add(ip[:6] + b"\x00\x10" + ip[8:], 4)                                       # later fragment
    add(bytes([0x46]) + ip[1:20] + b"\x01\x01\x01\x00" + ip[20:], 4)            # IP options
    return frames


@pytest.mark.parametrize("options", [{}, {"verify_checksums": True}, {"seg_flags": True}])
def test_plain_ethernet_fast_path_decodes_as_the_general_loop(tmp_path, options):
    """A VLAN tag sends the same packets through the general decode loop: every field and
    warning must come out the same as from the fast path for untagged Ethernet."""
    frames = _plain_and_tagged_cases()
    tagged = [g.Frame(f.ts_ns, f.data[:12] + b"\x81\x00\x00\x0a" + f.data[12:],
                      None if f.orig_len is None else f.orig_len + 4) for f in frames]
    plain, plain_stats = read_all(write(tmp_path, "p.pcap", g.pcap_bytes(frames)), **options)
    vlan, vlan_stats = read_all(write(tmp_path, "v.pcap", g.pcap_bytes(tagged)), **options)
    assert len(plain) >= 11              # (a first fragment is held for reassembly now)
    columns_equal(plain, vlan, skip=("frame_len",))
    assert (vlan["frame_len"] - plain["frame_len"]).tolist() == [4] * len(plain)
    if options.get("seg_flags"):
        assert np.array_equal(plain["seg_flags"], vlan["seg_flags"])
        assert plain["seg_flags"].any()
    assert plain_stats.warnings == vlan_stats.warnings
    assert plain_stats.warnings                 # the fragment, the bogus header ...


HTTP_PAYLOADS = [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1),
    (b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\n\r\nHEAD /3 HTTP/1.1\r\n\r\n", 3),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0x10),
    (b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 0x20),
    (b"OPTIONS * HTTP/1.1\r\n\r\nDELETE /x HTTP/1.1\r\n\r\nGET", 2),   # a cut method: no
    (b"PATCH /p HTTP/1.1\r\n\r\nbody\r\n\r\nTRACE / HTTP/1.1\r\n\r\n", 2),
    (b"GETX / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", 0),    # not a message start: not looked at
    (b"get / HTTP/1.1\r\n\r\n", 0),
    (b"Hello world\r\n\r\nGET / HTTP/1.1\r\n\r\n", 0),         # a body's continuation
    (b"\x16\x03\x01\x02\x00GET ", 0),                          # TLS
    (b"CONNECT h:443 HTTP/1.1\r\n\r\nPUT /u HTTP/1.1\r\n\r\n", 2),
]


def test_app_marks_count_http_message_starts_as_the_python_reference_does(tmp_path):
    """``app_marks``: HTTP/1.x requests (low 4 bits) and responses (high 4) a segment's
    captured payload starts; the compiled decoder and ``batch.http_marks`` agree, and a snap
    length counts only what was captured."""
    from traceaudit.capture.batch import http_marks
    conv = g.Conversation().handshake()
    for payload, _ in HTTP_PAYLOADS:
        conv.send("c", g.ACK | g.PSH, payload)
    conv.send("c", g.ACK | g.PSH, b"GET / HTTP/1.1\r\n\r\n" * 20)      # capped at 15
    batch, _ = read_all(write(tmp_path, "h.pcap", g.pcap_bytes(conv.frames)))
    want = [m for _, m in HTTP_PAYLOADS] + [15]
    assert batch["app_marks"][3:].tolist() == want
    assert [http_marks(p) for p, _ in HTTP_PAYLOADS] == want[:-1]
    assert batch["app_marks"][:3].tolist() == [0, 0, 0]
    # snap length: the second pipelined request is cut (Ethernet 14 + IP 20 + TCP 20 + 20)
    cut, _ = read_all(write(tmp_path, "cut.pcap", g.pcap_bytes(conv.frames, snaplen=74)))
    assert cut["app_marks"][4] == http_marks(HTTP_PAYLOADS[1][0][:20]) == 1
