"""The tshark reader (pyshark) against ``tshark -T fields``, and against the built-in reader.

The field tests read the same captures two independent ways: TsharkSource (tshark's JSON, parsed
by pyshark) and a plain ``tshark -T fields`` run parsed here. The cross-check then demands that
the built-in reader and the tshark reader give identical columns on the same files.
Set TRACEAUDIT_CROSSCHECK_ALL=1 to cross-check every corpus trace instead of the chosen dozen.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from decimal import Decimal
from ipaddress import ip_address
from pathlib import Path

import numpy as np
import pytest

from traceaudit.capture.batch import COLUMNS, PacketBatch, http_marks
from traceaudit.capture.tshark import TsharkSource, tshark_available
from traceaudit.errors import CaptureError

try:    # the built-in reader's entry point; only the cross-check needs it
    from traceaudit.capture import open_capture
except ImportError:
    open_capture = None

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared/corpus/zeek/traces"
SAMPLES = ROOT / "sample_pcaps"

needs_tshark = pytest.mark.skipif(
    not tshark_available(),
    reason="tshark or pyshark is not installed (apt-get install tshark; pip install pyshark)")
needs_corpus = pytest.mark.skipif(not TRACES.is_dir(), reason="../shared corpus not present")
needs_native = pytest.mark.skipif(open_capture is None,
                                  reason="traceaudit.capture.open_capture has not landed yet")
pytestmark = [pytest.mark.tshark]


def trace(name: str) -> Path:
    return TRACES / name


# -- tshark -T fields, parsed independently ----------------------------------------------------

FIELDS = ["frame.number", "frame.time_epoch", "frame.len", "frame.protocols", "ip.src", "ip.dst",
          "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw",
          "tcp.flags", "tcp.window_size_value", "tcp.len", "tcp.options.mss_val",
          "tcp.options.wscale.shift", "tcp.options.sack_perm", "tcp.options.timestamp.tsval",
          "tcp.options.timestamp.tsecr", "tcp.checksum.status", "ip.len", "ipv6.plen",
          "tcp.payload", "ip.ttl", "ip.id", "ip.flags.df", "ipv6.hlim"]


def tshark_frames(path: Path, *prefs: str) -> list[dict[str, str]]:
    """One dict per frame of ``tshark -T fields`` output; repeated fields joined by ``|``."""
    cmd = ["tshark", "-n", "-r", str(path), "-o", "ip.defragment:TRUE",
           "-o", "ipv6.defragment:TRUE", "-T", "fields", "-E", "occurrence=a",
           "-E", "aggregator=|"]
    for pref in prefs:
        cmd += ["-o", pref]
    for name in FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(FIELDS, line.split("\t"))) for line in out.splitlines()]


def words(text: str) -> tuple[int, int]:
    addr = ip_address(text)
    value = int(addr) if addr.version == 6 else 0xFFFF_0000_0000 | int(addr)
    return value >> 64, value & (2**64 - 1)


def expected_row(f: dict[str, str]) -> dict[str, int] | None:
    """The row a frame should give, from its -T fields values; None for no TCP segment."""
    tokens = f["frame.protocols"].split(":")
    if "tcp" not in tokens:
        return None
    before = tokens[:tokens.index("tcp")]
    if "icmp" in before or "icmpv6" in before:
        return None
    ips = [t for t in before if t in ("ip", "ipv6")]
    name = ips[-1]
    k = ips.count(name) - 1
    src, dst = (f[f"{name}.{side}"].split("|")[k] for side in ("src", "dst"))

    def last(field: str, default: int) -> int:
        return int(f[field].split("|")[-1], 0) if f[field] else default

    row = {"frame": int(f["frame.number"]),
           "ts_ns": int(Decimal(f["frame.time_epoch"]) * 10**9),
           "ip_version": 6 if name == "ipv6" else 4,
           "sport": int(f["tcp.srcport"]), "dport": int(f["tcp.dstport"]),
           "seq": int(f["tcp.seq_raw"]), "ack": int(f["tcp.ack_raw"]),
           "flags": int(f["tcp.flags"], 16) & 0x1FF, "win": int(f["tcp.window_size_value"]),
           "payload_len": int(f["tcp.len"]), "frame_len": int(f["frame.len"]),
           "mss": last("tcp.options.mss_val", 0), "wscale": last("tcp.options.wscale.shift", -1),
           "sack_perm": bool(f["tcp.options.sack_perm"]),
           "has_ts": bool(f["tcp.options.timestamp.tsval"]),
           "tsval": last("tcp.options.timestamp.tsval", 0),
           "tsecr": last("tcp.options.timestamp.tsecr", 0),
           "tunneled": len(ips) > 1,
           # the IP header's total length field (IPv6: payload length + 40)
           "ip_len": int(f["ipv6.plen"].split("|")[k]) + 40 if name == "ipv6"
           else int(f["ip.len"].split("|")[k]),
           # HTTP/1.x message starts in the captured payload (the -T fields hex of tcp.payload)
           "app_marks": http_marks(bytes.fromhex(f["tcp.payload"].split("|")[-1]
                                                 .replace(":", ""))),
           # the innermost IP header's TTL / hop limit, IPv4 ID and DF bit (IPv6: -1, False)
           "ttl": int(f["ipv6.hlim" if name == "ipv6" else "ip.ttl"].split("|")[k]),
           "ip_id": -1 if name == "ipv6" else int(f["ip.id"].split("|")[k], 0),
           "ip_df": False if name == "ipv6" else f["ip.flags.df"].split("|")[k] in ("1", "True")}
    row["src_hi"], row["src_lo"] = words(src)
    row["dst_hi"], row["dst_lo"] = words(dst)
    return row


def read(path: Path, **kwargs) -> tuple[PacketBatch, TsharkSource]:
    src = TsharkSource(str(path), **kwargs)
    return PacketBatch.concat(list(src.batches())), src


FIELD_TRACES = {
    "tunnels.gre-sample.pcap": "IPv4 in GRE",
    "ftp.ipv6.pcap": "IPv6",
    "tls.irc-starttls.pcap": "Linux cooked capture (SLL)",
    "http.connect-with-header.pcap": "BSD null/loopback link",
    "tcp.http-on-irc-port-missing-syn.pcapng": "pcapng",
}


@needs_tshark
@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("name", FIELD_TRACES)
def test_every_column_matches_tshark_fields(name):
    path = trace(name)
    frames = tshark_frames(path)
    want = [r for r in map(expected_row, frames) if r is not None]
    batch, src = read(path)
    assert len(batch) == len(want) > 0
    for column in COLUMNS:
        got = batch[column].tolist()
        ref = [r[column] for r in want]
        bad = [(r["frame"], g, e) for r, g, e in zip(want, got, ref) if g != e]
        assert not bad, f"{column}: first (frame, reader, tshark -T fields) {bad[:5]}"
    st = src.stats
    assert (st.format, st.packets, st.tcp_packets, st.error) == ("tshark", len(frames),
                                                                len(want), None)
    all_ts = [int(Decimal(f["frame.time_epoch"]) * 10**9) for f in frames]
    assert (st.first_ts_ns, st.last_ts_ns) == (min(all_ts), max(all_ts))


@needs_tshark
@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("name, link", [("tls.irc-starttls.pcap", 113),
                                        ("http.connect-with-header.pcap", 0),
                                        ("tcp.http-on-irc-port-missing-syn.pcapng", 1)])
def test_link_types_come_from_the_file(name, link):
    _, src = read(trace(name))
    assert src.stats.link_types == [link]


@needs_tshark
@needs_corpus
@pytest.mark.corpus
def test_tunnels_and_ipv6_rows():
    gre, _ = read(trace("tunnels.gre-sample.pcap"))
    assert len(gre) and gre["tunneled"].all() and (gre["ip_version"] == 4).all()
    v6, _ = read(trace("ftp.ipv6.pcap"))
    assert len(v6) and not v6["tunneled"].any() and (v6["ip_version"] == 6).all()
    assert (v6["src_hi"] >> np.uint64(32) == 0x2001_0470).all()
    ayiya, _ = read(trace("tunnels.ayiya3.pcap"))         # IPv6 in AYIYA in UDP in IPv4
    assert len(ayiya) and ayiya["tunneled"].all() and (ayiya["ip_version"] == 6).all()


@needs_tshark
@needs_corpus
@pytest.mark.corpus
def test_amsdu_frame_gives_its_first_subframe():
    # One 802.11 A-MSDU in Aruba GRE holding two TCP segments: the row is the first one's.
    batch, _ = read(trace("tunnels.gre-aruba-amsdu.pcap"))
    (seqs,) = [f["tcp.seq_raw"] for f in tshark_frames(trace("tunnels.gre-aruba-amsdu.pcap"))]
    assert batch["seq"].tolist() == [int(seqs.split("|")[0])] and batch["tunneled"].all()


@needs_tshark
@needs_corpus
@pytest.mark.corpus
def test_batches_hold_at_most_batch_rows():
    path = trace("ftp.ipv6.pcap")
    whole, _ = read(path)
    src = TsharkSource(str(path), batch_rows=7)
    parts = list(src.batches())
    assert all(0 < len(p) <= 7 for p in parts) and len(parts) == -(-len(whole) // 7)
    joined = PacketBatch.concat(parts)
    assert all(np.array_equal(joined[c], whole[c]) for c in COLUMNS)


@needs_tshark
@needs_corpus
@pytest.mark.corpus
def test_verify_checksums_drops_what_tshark_calls_bad():
    path = trace("chksums.localhost-bad-chksum.pcap")
    frames = tshark_frames(path, "tcp.check_checksum:TRUE")
    bad = {int(f["frame.number"]) for f in frames if f["tcp.checksum.status"] == "0"}
    tcp = {r["frame"] for r in map(expected_row, frames) if r}
    assert bad and bad < tcp
    kept, src = read(path, verify_checksums=True)
    assert set(kept["frame"].tolist()) == tcp - bad
    assert any("wrong checksum" in w for w in src.stats.warnings)
    everything, _ = read(path)
    assert set(everything["frame"].tolist()) == tcp


# -- hand-made captures ----------------------------------------------------------------------

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
A6, B6 = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")


def fold(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp(seq: int, flags: int, payload: bytes = b"", opts: bytes = b"", src=A, dst=B,
        good_sum: bool = True) -> bytes:
    head = struct.pack("!HHIIHHHH", 40000, 80, seq, 7, ((20 + len(opts)) // 4) << 12 | flags,
                       512, 0, 0) + opts
    seg = head + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg)) if len(src) == 4 else \
        src + dst + struct.pack("!IxxxB", len(seg), 6)
    csum = fold(pseudo + seg) if good_sum else 0x1234
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def ipv4(proto: int, body: bytes, frag: int = 0, src=A, dst=B) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, frag, 64, proto, 0, src, dst)
    return head[:10] + struct.pack("!H", fold(head)) + head[12:] + body


def ipv6(nxt: int, body: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x6000_0000, len(body), nxt, 64, A6, B6) + body


def ether(packet: bytes, ethertype: int = 0x0800) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", ethertype) + packet


def pcap_ns(frames: list[tuple[int, bytes]]) -> bytes:
    """A nanosecond-resolution classic pcap of (ts_ns, frame) records, Ethernet link."""
    out = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
    for ts, data in frames:
        out += struct.pack("<IIII", ts // 10**9, ts % 10**9, len(data), len(data)) + data
    return out


T0 = 1_700_000_000_123_456_789
SYN_OPTS = bytes.fromhex("020405b4" "0402" "080a0000000100000000" "01" "030307")


def crafted() -> list[tuple[int, bytes]]:
    seg = tcp(100, 0x010, b"x" * 40)
    quoted = ipv4(6, tcp(5, 0x002), src=B, dst=A)[:28]
    return [
        (T0, ether(ipv4(6, tcp(1000, 0x002, opts=SYN_OPTS)))),                 # 1 SYN + options
        (T0 + 1, ether(ipv4(1, struct.pack("!BBHI", 3, 3, 0, 0) + quoted))),  # 2 ICMP quoting
        (T0 + 2, ether(ipv4(6, seg[:32], frag=0x2000))),                       # 3 first fragment
        (T0 + 3, ether(ipv4(6, seg[32:], frag=4))),                            # 4 later fragment
        (T0 + 4, ether(ipv6(6, tcp(9, 0x011, b"bye", src=A6, dst=B6)), 0x86DD)),  # 5 IPv6 FIN
        (T0 + 5, ether(ipv4(4, ipv4(6, tcp(11, 0x004))))),                     # 6 IP-in-IP RST
        (T0 + 6, ether(ipv4(6, tcp(12, 0x1FF, b"z", good_sum=False)))),        # 7 bad checksum
    ]


@pytest.fixture
def crafted_pcap(tmp_path):
    path = tmp_path / "crafted.pcap"
    path.write_bytes(pcap_ns(crafted()))
    return path


@needs_tshark
def test_crafted_capture(crafted_pcap):
    batch, src = read(crafted_pcap)
    assert batch["frame"].tolist() == [1, 4, 5, 6, 7]      # no ICMP quote; fragments reassembled
    assert batch["ts_ns"].tolist() == [T0, T0 + 3, T0 + 4, T0 + 5, T0 + 6]   # exact ns
    assert batch["mss"][0] == 1460 and batch["wscale"][0] == 7 and batch["sack_perm"][0]
    assert batch["has_ts"][0] and (batch["tsval"][0], batch["tsecr"][0]) == (1, 0)
    assert batch["wscale"][1:].tolist() == [-1] * 4 and not batch["has_ts"][1:].any()
    assert batch["payload_len"].tolist() == [0, 40, 3, 0, 1]  # the reassembled datagram's
    assert batch["ip_version"].tolist() == [4, 4, 6, 4, 4]
    assert batch["tunneled"].tolist() == [False, False, False, True, False]
    assert batch["flags"].tolist() == [0x002, 0x010, 0x011, 0x004, 0x1FF]
    assert batch["src_lo"][0] == 0xFFFF_0A00_0001 and batch["src_hi"][0] == 0
    assert (batch["src_hi"][2], batch["src_lo"][2]) == (0x2001_0DB8_0000_0000, 1)
    assert (src.stats.packets, src.stats.tcp_packets) == (7, 5)
    assert src.stats.link_types == [1] and (src.stats.first_ts_ns, src.stats.last_ts_ns) == \
        (T0, T0 + 6)
    assert not any("fragment" in w for w in src.stats.warnings)
    checked, src = read(crafted_pcap, verify_checksums=True)
    assert 7 not in checked["frame"].tolist() and 1 in checked["frame"].tolist()


@needs_tshark
def test_damage_after_packets_is_reported_not_raised(tmp_path):
    data = pcap_ns(crafted())
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-10])
    batch, src = read(path)
    assert src.stats.error is not None and "cut short" in src.stats.error.reason
    assert src.stats.packets == 6 and len(batch) == 4
    assert any("kept the 6 packet(s)" in w for w in src.stats.warnings)


@needs_tshark
@pytest.mark.parametrize("content, slug", [(bytes(range(7, 250)) * 8, "tshark-error"),
                                           (b"", "empty")])
def test_not_a_capture_raises(tmp_path, content, slug):
    path = tmp_path / "junk.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as err:
        list(TsharkSource(str(path)).batches())
    assert err.value.slug == slug and err.value.offset is None
    if slug == "tshark-error":
        assert "isn't a capture file" in err.value.reason       # tshark's own words


@needs_tshark
def test_missing_file_raises(tmp_path):
    with pytest.raises(CaptureError) as err:
        list(TsharkSource(str(tmp_path / "nope.pcap")).batches())
    assert err.value.slug == "open"


@needs_tshark
def test_stopping_early_ends_tshark(crafted_pcap):
    src = TsharkSource(str(crafted_pcap), batch_rows=1)
    stream = src.batches()
    assert len(next(stream)) == 1
    stream.close()                  # must not hang, raise, or leave tshark running
    assert src.stats.tcp_packets == 1


def test_missing_tshark_is_a_capture_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))               # an empty directory
    try:    # pyshark also looks at a config.ini; make it name no tshark either
        import pyshark.tshark.tshark as finder
        monkeypatch.setattr(finder, "get_config", lambda: None)
    except ImportError:
        pass
    assert not tshark_available()
    with pytest.raises(CaptureError) as err:
        TsharkSource(str(tmp_path / "x.pcap"))
    assert err.value.slug == "tshark-missing" and "apt-get install tshark" in str(err.value)


def test_missing_pyshark_is_a_capture_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyshark", None)
    monkeypatch.setitem(sys.modules, "pyshark.tshark.tshark", None)
    assert not tshark_available()
    with pytest.raises(CaptureError) as err:
        TsharkSource(str(tmp_path / "x.pcap"))
    assert err.value.slug == "tshark-missing"


# -- the cross-check: built-in reader == tshark reader -----------------------------------------

#: Corpus traces chosen to cover what the readers must agree on.
CROSS_TRACES = [
    "tunnels.gre-sample.pcap",                  # GRE
    "tunnels.vxlan-encapsulated-http.pcap",     # VXLAN
    "tunnels.geneve-many-options.pcap",         # Geneve with options
    "tunnels.gre-over-udp-4754.pcap",           # GRE in UDP
    "tunnels.ayiya3.pcap",                      # IPv6 in AYIYA
    "tunnels.gtp.gtp1_gn_normal_incl_fragmentation.pcap",   # GTP-U, outer IP fragments
    "tunnels.gre-aruba-amsdu.pcap",             # 802.11 A-MSDU in Aruba GRE
    "ftp.ipv6.pcap",                            # IPv6
    "tls.irc-starttls.pcap",                    # Linux SLL
    "http.connect-with-header.pcap",            # BSD null link
    "tcp.http-on-irc-port-missing-syn.pcapng",  # pcapng
    "pppoe-over-qinq.pcap",                     # PPPoE in QinQ; PPPoE length < IP length
    "mixed-vlan-mpls.pcap",                     # VLAN and MPLS
    "cisco-fabric-path.pcap",                   # FabricPath
    "chksums.localhost-bad-chksum.pcap",        # bad checksums
    "tcp.syn-bad.pcap",                         # odd SYN
]
#: Traces whose checksums must also agree under --verify-checksums.
VERIFY_TRACES = ["chksums.localhost-bad-chksum.pcap", "pppoe-over-qinq.pcap",
                 "tunnels.gtp.gtp1_gn_normal_incl_fragmentation.pcap", "cisco-fabric-path.pcap"]


def cross_paths() -> list[Path]:
    names = CROSS_TRACES
    if os.environ.get("TRACEAUDIT_CROSSCHECK_ALL") and TRACES.is_dir():
        names = sorted(p.name for p in TRACES.iterdir() if p.is_file())
    paths = [trace(n) for n in names]
    if SAMPLES.is_dir():
        paths += sorted(p for p in SAMPLES.iterdir() if ".pcap" in p.name or
                        p.name.endswith(".cap"))
    return paths


def both(path: Path, **kwargs):
    out = []
    for reader in ("native", "tshark"):
        src = open_capture(path, reader=reader, **kwargs)
        out.append((PacketBatch.concat(list(src.batches())), src.stats))
    return out


def mismatch_report(a: PacketBatch, b: PacketBatch, limit: int = 8) -> str:
    """The first frames on which the two readers differ, column by column."""
    fa, fb = a["frame"], b["frame"]
    lines = []
    if not np.array_equal(fa, fb):
        only_a, only_b = np.setdiff1d(fa, fb), np.setdiff1d(fb, fa)
        lines.append(f"rows: native {len(fa)}, tshark {len(fb)}; frames only native "
                     f"{only_a[:limit].tolist()}, only tshark {only_b[:limit].tolist()}")
    common, ia, ib = np.intersect1d(fa, fb, return_indices=True)
    diffs = []
    # Compared: every COLUMNS field. Not compared: the optional seg_flags column
    # (batch.OPTIONAL_COLUMNS), which only the native reader makes, on request; the pipeline
    # falls back to a verifying second read for the tshark reader when Zeek needs the marks.
    for name in COLUMNS:
        for i in np.nonzero(a[name][ia] != b[name][ib])[0][:limit]:
            diffs.append((int(common[i]), name, a[name][ia][i].item(), b[name][ib][i].item()))
    for frame, name, x, y in sorted(diffs)[:limit]:
        lines.append(f"frame {frame}: {name} native={x} tshark={y}")
    return "\n".join(lines)


def assert_same(path: Path, **kwargs) -> None:
    if not path.is_file():
        pytest.skip(f"{path} not present")
    (a, sa), (b, sb) = both(path, **kwargs)
    report = mismatch_report(a, b)
    if report:
        print(f"{path.name}: readers differ\n{report}")
    assert not report, report
    for field in ("packets", "tcp_packets", "first_ts_ns", "last_ts_ns", "link_types", "error"):
        assert getattr(sa, field) == getattr(sb, field), field


@needs_tshark
@needs_native
@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("path", cross_paths(), ids=lambda p: p.name)
def test_both_readers_give_identical_fields(path):
    assert_same(path)


@needs_tshark
@needs_native
@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("name", VERIFY_TRACES)
def test_both_readers_agree_on_checksums(name):
    assert_same(trace(name), verify_checksums=True)


def ipv4_ah(body: bytes) -> bytes:
    """IPv4 carrying TCP behind an Authentication Header (RFC 4302; 24 bytes with a 12-byte ICV)."""
    return ipv4(51, struct.pack("!BBHII", 6, 4, 0, 0x100, 1) + b"\0" * 12 + body)


def bogus_offset() -> bytes:
    """A TCP header whose data offset says 4 words (16 bytes): below the 20-byte minimum."""
    seg = bytearray(tcp(30, 0x010, b"q" * 10))
    seg[12] = 0x40
    return ether(ipv4(6, bytes(seg)))


@needs_tshark
@needs_native
def test_both_readers_see_tcp_behind_ipv4_ah(tmp_path):
    path = tmp_path / "ah.pcap"
    path.write_bytes(pcap_ns([(T0, ether(ipv4_ah(tcp(20, 0x018, b"a" * 10))))]))
    batch, _ = read(path)
    assert batch["payload_len"].tolist() == [10]
    assert_same(path)


@needs_tshark
@needs_native
def test_a_bogus_data_offset_is_kept_by_the_native_reader_only(tmp_path):
    """tshark gives such a segment to its tcp.stream but shows no flags: the native reader
    keeps it (ports, flags, seq) as tshark's stream assignment does; this reader cannot."""
    path = tmp_path / "bogus.pcap"
    path.write_bytes(pcap_ns([(T0, bogus_offset())]))
    batch, src = read(path)
    assert len(batch) == 0 and any("data offset" in w for w in src.stats.warnings)
    (native, nstats), _ = both(path)
    assert native["seq"].tolist() == [30] and native["flags"].tolist() == [0x010]
    assert any("data offset" in w for w in nstats.warnings)
