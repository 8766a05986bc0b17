"""Headers and link layers the decoder learnt for issue 20, each checked against tshark.

Every capture is crafted with pcapgen; for every frame tshark shows as TCP we must have the same
frame, with tshark's tcp.stream as our connection id, the same addresses (the innermost IP
layer's; a source route's final hop as tshark's ip.dst), ports, flags and raw seq, and no TCP
frame tshark does not have.
"""

from __future__ import annotations

import ipaddress

import pytest

import pcapgen as g
from conftest import CORPUS, SAMPLES, needs_corpus, needs_tshark, tshark_fields
from traceaudit.capture import open_capture
from traceaudit.capture import linktypes as lt
from traceaudit.flows import FlowBuilder
from traceaudit.flows.addresses import format_addresses

FIELDS = ["frame.number", "tcp.stream", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport",
          "tcp.dstport", "tcp.flags", "tcp.seq_raw", "frame.protocols"]


def ours(path):
    """frame -> (conn, src, dst, sport, dport, flags, seq); and the capture's stats."""
    src = open_capture(path)
    builder = FlowBuilder()
    rows = {}
    for batch in src.batches():
        conn = builder.add(batch).conn.tolist()
        s = format_addresses(batch["src_hi"], batch["src_lo"], batch["ip_version"]).tolist()
        d = format_addresses(batch["dst_hi"], batch["dst_lo"], batch["ip_version"]).tolist()
        for k, f in enumerate(batch["frame"].tolist()):
            rows[f] = (conn[k], s[k], d[k], int(batch["sport"][k]), int(batch["dport"][k]),
                       int(batch["flags"][k]), int(batch["seq"][k]))
    return rows, src.stats


def theirs(path):
    rows = {}
    for frame, stream, v4s, v4d, v6s, v6d, sp, dp, flags, seq, protos in tshark_fields(path,
                                                                                      FIELDS):
        if not stream:
            continue
        inner6 = protos.rfind(":ipv6") > protos.rfind(":ip:")
        s, d = (v6s, v6d) if inner6 else (v4s, v4d)
        rows[int(frame)] = (int(stream), s.split(",")[-1], d.split(",")[-1], int(sp), int(dp),
                            int(flags, 16) if flags else None, int(seq))
    return rows


def assert_matches_tshark(path, expect_tcp=None):
    """Our rows equal tshark's (flags compared where tshark shows them); returns our stats."""
    mine, stats = ours(path)
    ref = theirs(path)
    assert stats.error is None, stats.error
    if expect_tcp is not None:
        assert len(ref) == expect_tcp, "tshark does not see the crafted TCP packets"
    assert sorted(mine) == sorted(ref), "TCP frames differ from tshark's"
    for f, want in ref.items():
        got = mine[f]
        if want[5] is None:                 # tshark shows no flags for a bogus header
            got, want = got[:5] + got[6:], want[:5] + want[6:]
        assert got == want, (f, got, want)
    return stats


def two_connections(wrap=None, *, v6: bool = False) -> list[g.Frame]:
    """A client opening two connections to one server (and one from the server's side), with
    data and closes: three tcp.streams, traffic both ways."""
    client, server = ("2001:db8::1", "2001:db8::2") if v6 else ("10.0.0.1", "10.0.0.2")
    frames = []
    t0 = 1_700_000_000_000_000_000
    for i, (c, s, port) in enumerate([(client, server, 40000), (client, server, 40001),
                                      (server, client, 50000)]):
        conv = g.Conversation(client=c, server=s, cport=port, t0_ns=t0 + i * 500_000, wrap=wrap,
                              gap_ns=2_000_000)
        conv.handshake().send("c", g.ACK | g.PSH, b"GET /\r\n").send("s", g.ACK | g.PSH,
                                                                     b"ok" * 30)
        conv.close_by("c" if i != 1 else "s")
        frames += conv.frames
    frames.sort(key=lambda f: f.ts_ns)
    return frames


def write(tmp_path, name, frames, linktype=1, *, pcapng=False):
    p = tmp_path / name
    if pcapng:
        p.write_bytes(g.pcapng_section(frames, interfaces=[(linktype, 9)]))
    else:
        p.write_bytes(g.pcap_bytes(frames, linktype=linktype, nano=True))
    return p


def warnings_of(stats) -> str:
    return "\n".join(stats.warnings)


# -- (1) TCP data offset, IPv4 source routes -------------------------------------------------
@needs_tshark
def test_tcp_data_offset_below_5_or_past_the_segment_is_kept_as_tshark_does(tmp_path):
    frames = two_connections()

    def damage(i, words):
        f = frames[i]
        f.data = f.data[:14] + g.with_data_offset(f.data[14:], words)

    # a SYN with offset 2 words, data with offset 4, a FIN whose header claims 60 bytes
    damage(0, 2)
    damage(6, 4)
    damage(len(frames) - 1, 15)         # the last ACK: a 20-byte segment
    stats = assert_matches_tshark(write(tmp_path, "offset.pcap", frames), expect_tcp=len(frames))
    assert "3 TCP header(s) with a data offset below 20 bytes or past" in warnings_of(stats)


def _route_conversation(options_for):
    """Client packets go to a first hop 10.0.0.9 with a source route ending at the server;
    ``options_for(i)`` gives the options (or None) for the i-th client packet."""
    count = {"n": 0}

    def wrap(pkt, ver, who):
        if who == "c":
            opts = options_for(count["n"], str(ipaddress.ip_address(pkt[16:20])))
            count["n"] += 1
            if opts is not None:
                pkt = g.ipv4_with_options(pkt, opts, dst="10.0.0.9")
        return g.ethernet(pkt, ver)
    return wrap


@needs_tshark
@pytest.mark.parametrize("strict", [False, True])
def test_ipv4_source_route_destination_is_the_final_hop(tmp_path, strict):
    def route(i, dst):
        return {0: g.source_route(["10.0.0.7", dst], strict=strict),
                1: g.source_route(["10.0.0.7", dst], strict=strict, pointer=8),  # last hop next
                2: b"\x01" + g.source_route(["10.0.0.5", "10.0.0.6", dst], strict=strict),
                }.get(i % 4)
    frames = two_connections(_route_conversation(route))
    path = write(tmp_path, "route.pcap", frames)
    assert_matches_tshark(path, expect_tcp=len(frames))
    mine, _ = ours(path)
    assert len({c for c, *_ in mine.values()}) == 3     # replies from 10.0.0.2 join them


@needs_tshark
def test_ipv4_route_already_travelled_keeps_the_header_destination(tmp_path):
    # pointer past the route (arrived) or before the first address: ip.dst is the header's
    def route(i, dst):
        return {0: g.source_route(["10.0.0.7", dst], pointer=12),
                1: g.source_route(["10.0.0.7", dst], pointer=3)}.get(i)
    frames = two_connections(_route_conversation(route))
    assert_matches_tshark(write(tmp_path, "route-done.pcap", frames), expect_tcp=len(frames))


@needs_tshark
def test_malformed_ipv4_option_is_counted_and_the_packet_kept_as_tshark_does(tmp_path):
    bad = {1: bytes([131, 40, 4, 0]),          # length past the options
           2: bytes([7, 1, 0, 0]),             # record route with length 1
           3: bytes([1, 1, 131, 2]),           # source route too short for its pointer
           4: bytes([1, 1, 1, 68])}            # option type with no length byte
    frames = two_connections(
        lambda pkt, ver, who: g.ethernet(g.ipv4_with_options(pkt, bad[len(pkt) % 4 + 1])
                                         if who == "c" else pkt, ver))
    stats = assert_matches_tshark(write(tmp_path, "badopt.pcap", frames),
                                  expect_tcp=len(frames))
    assert "IPv4 header(s) with a malformed option" in warnings_of(stats)


# -- (2) link types --------------------------------------------------------------------------
LINKS = {
    "cisco-hdlc": (lt.CHDLC, lambda p, v, w: g.cisco_hdlc(p, v)),
    "cisco-hdlc-broadcast": (lt.CHDLC, lambda p, v, w: g.cisco_hdlc(p, v, 0x8F)),
    "hdlc-in-ppp": (lt.PPP, lambda p, v, w: g.cisco_hdlc(p, v)),
    "hdlc-in-ppp-hdlc": (lt.PPP_HDLC, lambda p, v, w: g.cisco_hdlc(p, v, 0x8F)),
    "802.11": (lt.IEEE802_11, lambda p, v, w: g.wlan_data(p, v, to_ds=w == "c")),
    "802.11-qos-wds": (lt.IEEE802_11, lambda p, v, w: g.wlan_data(p, v, qos=True, wds=True)),
    "802.11-qos-htc": (lt.IEEE802_11, lambda p, v, w: g.wlan_data(p, v, qos=True, htc=True)),
    "radiotap": (lt.IEEE802_11_RADIOTAP,
                 lambda p, v, w: g.radiotap(g.wlan_data(p, v, qos=w == "s"))),
    "radiotap-no-fcs": (lt.IEEE802_11_RADIOTAP,
                        lambda p, v, w: g.radiotap(g.wlan_data(p, v), fcs=False)),
    "nflog": (lt.NFLOG, lambda p, v, w: g.nflog(p, v)),
    "arcnet-1201": (lt.ARCNET_BSD, lambda p, v, w: g.arcnet(p, v)),
    "arcnet-1051": (lt.ARCNET_BSD, lambda p, v, w: g.arcnet(p, v, rfc1051=True)),
    "ipoib": (lt.IPOIB, lambda p, v, w: g.ipoib(p, v)),
}
V6_LINKS = ["cisco-hdlc", "802.11", "radiotap", "nflog", "ipoib", "arcnet-1201"]


@needs_tshark
@pytest.mark.parametrize("name", sorted(LINKS))
def test_link_type_decoded_as_tshark_does(tmp_path, name):
    linktype, wrap = LINKS[name]
    frames = two_connections(wrap)
    assert_matches_tshark(write(tmp_path, f"{name}.pcap", frames, linktype),
                          expect_tcp=len(frames))


@needs_tshark
@pytest.mark.parametrize("name", V6_LINKS)
def test_link_type_carries_ipv6_as_tshark_does(tmp_path, name):
    linktype, wrap = LINKS[name]
    frames = two_connections(wrap, v6=True)
    assert_matches_tshark(write(tmp_path, f"{name}-v6.pcapng", frames, linktype, pcapng=True),
                          expect_tcp=len(frames))


@needs_tshark
def test_protected_802_11_frames_are_not_tcp(tmp_path):
    frames = two_connections(lambda p, v, w: g.wlan_data(p, v, protected=w == "s"))
    assert_matches_tshark(write(tmp_path, "wep.pcap", frames, lt.IEEE802_11))


def test_new_link_types_no_longer_stop_the_file(tmp_path):
    for name, (linktype, wrap) in LINKS.items():
        frames = two_connections(wrap)
        mine, stats = ours(write(tmp_path, f"{name}.pcap", frames, linktype))
        assert stats.error is None and len(mine) == len(frames), name
        assert not stats.warnings, (name, stats.warnings)


# -- (3) L2TPv2, WCCP GRE, undecodable encapsulations ----------------------------------------
def _l2tp(**kw):
    return lambda p, v, w: g.outer_ipv4(g.udp(1701, 1701, g.l2tp_data(g.ppp(p, v), **kw)), 17)


ENCAPS = {
    "l2tp": _l2tp(),
    "l2tp-bare": _l2tp(length=False, sequence=False, offset=None),
    "l2tp-no-address": lambda p, v, w: g.outer_ipv4(
        g.udp(40001 if w == "c" else 1701, 1701 if w == "c" else 40001,
              g.l2tp_data(g.ppp(p, v, hdlc=False), offset=0)), 17),
    "wccp": lambda p, v, w: g.outer_ipv4(g.gre(g.wccp_redirect(p), 0x883E), 47),
    "wccp-v1": lambda p, v, w: g.outer_ipv4(g.gre(p, 0x883E), 47),
}


@needs_tshark
@pytest.mark.parametrize("name", sorted(ENCAPS))
def test_encapsulation_decoded_as_tshark_does(tmp_path, name):
    frames = two_connections(ENCAPS[name])
    stats = assert_matches_tshark(write(tmp_path, f"{name}.pcap", frames),
                                  expect_tcp=len(frames))
    assert not stats.warnings, stats.warnings


def test_l2tp_control_messages_are_not_counted(tmp_path):
    control = g.outer_ipv4(g.udp(1701, 1701, bytes.fromhex("c802 000c 0000 0000 0000 0000")),
                           17)
    mine, stats = ours(write(tmp_path, "l2tp-ctl.pcap", [g.Frame(1, control)]))
    assert not mine and not stats.warnings


@pytest.mark.parametrize("payload", [
    g.gre(b"\x00" * 40, 0x1234),                                    # unknown GRE protocol
    g.gre(b"\xff\x03\x00\xfd" + b"\x00" * 40, 0x880B),              # PPP compressed datagram
])
def test_undecodable_gre_payload_is_counted(tmp_path, payload):
    frames = [g.Frame(1, g.outer_ipv4(payload, 47))]
    mine, stats = ours(write(tmp_path, "gre.pcap", frames))
    assert not mine
    assert "1 packet(s) of an encapsulation" in warnings_of(stats)


def test_undecodable_udp_tunnel_payload_is_counted(tmp_path):
    l2tpv3 = g.udp(1701, 1701, bytes.fromhex("0003 0000 1234 5678") + b"\x00" * 40)
    geneve = g.udp(6081, 6081, bytes.fromhex("0000 1234 0000 0100") + b"\x00" * 40)
    frames = [g.Frame(1, g.outer_ipv4(l2tpv3, 17)), g.Frame(2, g.outer_ipv4(geneve, 17))]
    mine, stats = ours(write(tmp_path, "udp.pcap", frames))
    assert not mine
    assert "2 packet(s) of an encapsulation" in warnings_of(stats)


# -- (4) IP-level fields (issue 21): TTL / hop limit, IPv4 ID, DF of the innermost IP header ---
IP_FIELDS = ["frame.number", "frame.protocols", "ip.ttl", "ip.id", "ip.flags.df", "ipv6.hlim"]


def ip_fields_ours(path) -> dict[int, tuple[int, int, bool]]:
    rows = {}
    for batch in open_capture(path).batches():
        for f, ttl, ip_id, df in zip(batch["frame"].tolist(), batch["ttl"].tolist(),
                                     batch["ip_id"].tolist(), batch["ip_df"].tolist()):
            rows[f] = (ttl, ip_id, df)
    return rows


def ip_fields_tshark(path) -> dict[int, tuple[int, int, bool]]:
    """frame -> (TTL or hop limit, IPv4 ID or -1, DF) of the innermost IP layer before TCP."""
    rows = {}
    for frame, protos, ttls, ids, dfs, hlims in tshark_fields(path, IP_FIELDS):
        tokens = protos.split(":")
        if "tcp" not in tokens or {"icmp", "icmpv6"} & set(tokens[:tokens.index("tcp")]):
            continue
        before = [t for t in tokens[:tokens.index("tcp")] if t in ("ip", "ipv6")]
        k = before.count(before[-1]) - 1
        if before[-1] == "ipv6":
            rows[int(frame)] = (int(hlims.split(",")[k]), -1, False)
        else:
            rows[int(frame)] = (int(ttls.split(",")[k]), int(ids.split(",")[k], 0),
                                dfs.split(",")[k] in ("1", "True"))
    return rows


def assert_ip_fields_match_tshark(path):
    mine, ref = ip_fields_ours(path), ip_fields_tshark(path)
    assert mine and set(mine) == set(ref), path
    bad = [(f, mine[f], ref[f]) for f in sorted(ref) if mine[f] != ref[f]]
    assert not bad, f"{path.name}: (frame, ours, tshark) {bad[:5]}"


def _varied_ip_fields(v6: bool, wrap=None) -> list[g.Frame]:
    """Both sides with their own TTL, IDs counting up, DF set or not; one reset forged with
    another TTL, ID and DF."""
    client, server = ("2001:db8::1", "2001:db8::2") if v6 else ("10.0.0.1", "10.0.0.2")
    conv = g.Conversation(client=client, server=server, ttl={"c": 64, "s": 57}, wrap=wrap)
    ids = {"c": 0x1200, "s": 0xFFFE}
    for who, flags, data in [("c", g.SYN, b""), ("s", g.SYN | g.ACK, b""), ("c", g.ACK, b""),
                             ("c", g.ACK | g.PSH, b"GET /\r\n"), ("s", g.ACK, b"ok" * 20),
                             ("c", g.ACK, b"")]:
        ids[who] += 1
        conv.send(who, flags, data, ident=ids[who], df=who == "c")
    conv.send("s", g.RST, ttl=250, ident=0, df=True)
    return conv.frames


@needs_tshark
@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("link", ["ethernet", "vlan", "gre"])
def test_ip_fields_of_crafted_segments_match_tshark(tmp_path, v6, link):
    """The Ethernet fast path, the general loop (a VLAN tag) and a tunnel's inner header."""
    wrap = {"ethernet": None,
            "vlan": lambda p, v, w: g.ethernet(p, v, vlans=(7,)),
            "gre": lambda p, v, w: g.outer_ipv4(g.gre(p, 0x86DD if v == 6 else 0x0800),
                                                47)}[link]
    path = write(tmp_path, f"ip-fields-{link}-{v6}.pcap", _varied_ip_fields(v6, wrap))
    assert_ip_fields_match_tshark(path)
    mine = ip_fields_ours(path)
    assert mine[7] == (250, -1 if v6 else 0, not v6)        # the forged reset
    assert mine[2][0] == 57 and mine[1][0] == 64


@needs_tshark
def test_ip_fields_with_ipv4_options_match_tshark(tmp_path):
    conv = g.Conversation(ttl={"c": 3, "s": 200})
    conv.handshake().send("c", g.ACK, ident=0xBEEF, df=False)
    frames = [g.Frame(f.ts_ns, f.data[:14] + g.ipv4_with_options(f.data[14:], b"\x01\x01\x01\x00"))
              for f in conv.frames]
    assert_ip_fields_match_tshark(write(tmp_path, "options.pcap", frames))


@needs_tshark
@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.pcap*")), ids=lambda p: p.name)
def test_ip_fields_of_the_samples_match_tshark(path):
    assert_ip_fields_match_tshark(path)


@needs_tshark
@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("name", ["tunnels.gre-sample.pcap", "ftp.ipv6.pcap",
                                  "tls.irc-starttls.pcap", "tunnels.Teredo.pcap",
                                  "tunnels.vxlan-encapsulated-http.pcap", "mixed-vlan-mpls.pcap",
                                  "tls.xmpp-starttls.pcap"])
def test_ip_fields_of_corpus_traces_match_tshark(name):
    assert_ip_fields_match_tshark(CORPUS / "traces" / name)
