"""IP fragment reassembly: flow tables equal tshark's; Linux's bounds (time, memory) hold."""

from __future__ import annotations

import pytest

import pcapgen as g
from conftest import needs_tshark
from test_decode_vs_tshark import assert_matches_tshark, ours, two_connections, warnings_of, write
from traceaudit.capture import fragments


def fragmented(size=8, *, v6=False, order=None, every=1):
    """two_connections() with every ``every``-th packet's IP datagram cut into ``size``-byte
    fragments (``order``: a function reordering one packet's list of fragments)."""
    count = {"n": 0}

    def wrap(pkt, ver, who):
        count["n"] += 1
        if count["n"] % every:
            return [g.ethernet(pkt, ver)]
        parts = (g.ipv6_fragments(pkt, size, ident=count["n"]) if ver == 6 else
                 g.ipv4_fragments(pkt, size, ident=count["n"]))
        return [g.ethernet(p, ver) for p in (order(parts) if order else parts)]
    return expand(two_connections(wrap, v6=v6))


def expand(frames):
    """Frames whose data is a list of frames become that many frames, 1 µs apart."""
    out = []
    for f in frames:
        parts = f.data if isinstance(f.data, list) else [f.data]
        out += [g.Frame(f.ts_ns + k * 1000, d) for k, d in enumerate(parts)]
    return out


@needs_tshark
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("order", ["in-order", "reversed", "first-last", "duplicated"])
def test_fragmented_tcp_headers_reassembled_as_tshark_does(tmp_path, v6, order):
    reorder = {"in-order": None, "reversed": lambda p: p[::-1],
               "first-last": lambda p: p[1:] + p[:1],
               "duplicated": lambda p: p[:1] + p[:1] + p[1:-1] + p[-1:] * 2}[order]
    frames = fragmented(8 if not v6 else 16, v6=v6, order=reorder, every=2)
    stats = assert_matches_tshark(write(tmp_path, f"frag-{order}.pcap", frames), expect_tcp=24)
    if order == "duplicated":       # the last fragment's copy comes after the datagram is whole
        assert warnings_of(stats).startswith("12 IP datagram(s) never completed (0 of them")
    else:
        assert not stats.warnings, stats.warnings


def _overlap_capture(tmp_path, name, parts_of):
    """One SYN whose datagram is sent as the fragments ``parts_of(pkt, alt)`` returns, where
    ``alt`` is the same SYN with other flags and window, then the rest of a connection."""
    conv = g.Conversation()
    syn, _ = g.tcp_segment("10.0.0.1", "10.0.0.2", 40000, 80, seq=1000, flags=g.SYN)
    alt, _ = g.tcp_segment("10.0.0.1", "10.0.0.2", 40000, 80, seq=1000, flags=g.SYN | g.FIN,
                           win=1234)
    frames = [g.Frame(conv.t0_ns + k * 1000, g.ethernet(p, 4))
              for k, p in enumerate(parts_of(syn, alt))]
    conv.t = conv.t0_ns + 1_000_000
    conv.send("s", g.SYN | g.ACK).send("c", g.ACK).close_by("c")
    return write(tmp_path, name, frames + conv.frames)


def frag(pkt, start, stop, more=True):
    """The bytes [start, stop) of ``pkt``'s payload as a fragment of it."""
    return g.ipv4_fragment(pkt[:20], pkt[20 + start:20 + stop], start, more)


OVERLAPS = {
    # the fragment at the lower offset wins, whichever arrives first
    "lower-offset-later": lambda s, a: [frag(s, 8, 16), frag(a, 0, 16), frag(s, 16, 20, False)],
    "lower-offset-first": lambda s, a: [frag(a, 0, 16), frag(s, 8, 16), frag(s, 16, 20, False)],
    # at one offset, the first to arrive wins
    "same-offset": lambda s, a: [frag(s, 0, 8), frag(a, 0, 8), frag(a, 8, 16), frag(s, 8, 16),
                                 frag(s, 16, 20, False)],
    # a longer fragment at one offset adds only its tail
    "longer-later": lambda s, a: [frag(s, 0, 8), frag(a, 0, 16), frag(s, 16, 20, False)],
}


@needs_tshark
@pytest.mark.parametrize("name", sorted(OVERLAPS))
def test_overlapping_fragments_resolved_as_tshark_does(tmp_path, name):
    stats = assert_matches_tshark(_overlap_capture(tmp_path, f"{name}.pcap", OVERLAPS[name]),
                                  expect_tcp=6)
    assert "1 reassembled IP datagram(s) had overlapping fragments" in warnings_of(stats)


@needs_tshark
@pytest.mark.parametrize("layer", ["outer", "inner"])
def test_fragments_of_a_tunnel_reassembled_as_tshark_does(tmp_path, layer):
    """IPv4 in GRE in IPv4: the outer datagram fragmented (the tunnel header and the inner
    TCP header split), or the inner one."""
    def wrap(pkt, ver, who):
        if layer == "inner":
            inner = g.ipv4_fragments(pkt, 8, ident=len(pkt) + (who == "s"))
            return [g.outer_ipv4(g.gre(p, 0x0800), 47) for p in inner]
        outer = g.ipv4_packet("192.0.2.1", "192.0.2.2", 47, g.gre(pkt, 0x0800),
                              ident=len(pkt) + (who == "s"))
        return [g.ethernet(p, 4) for p in g.ipv4_fragments(outer, 16)]
    frames = expand(two_connections(wrap))
    assert_matches_tshark(write(tmp_path, f"gre-{layer}.pcap", frames), expect_tcp=24)


@needs_tshark
def test_fragment_cut_by_the_snap_length_is_not_reassembled(tmp_path):
    # tshark decodes a cut first fragment as it is and skips the rest: so do we
    frames = fragmented(32, every=3)
    path = tmp_path / "snap.pcap"
    path.write_bytes(g.pcap_bytes(frames, snaplen=60))
    stats = assert_matches_tshark(path)
    assert "snap length" in warnings_of(stats)


def test_datagram_not_complete_within_30_s_is_dropped(tmp_path):
    frames = fragmented(8, every=100)                   # only the 100th... i.e. none
    syn, _ = g.tcp_segment("10.0.0.9", "10.0.0.2", 41000, 80, seq=1, flags=g.SYN)
    parts = g.ipv4_fragments(syn, 8)
    t = frames[-1].ts_ns
    late = [g.Frame(t + 1000, g.ethernet(parts[0], 4)),
            g.Frame(t + 2000 + fragments.IPFRAG_TIME_NS, g.ethernet(parts[1], 4)),
            g.Frame(t + 3000 + fragments.IPFRAG_TIME_NS, g.ethernet(parts[2], 4))]
    mine, stats = ours(write(tmp_path, "late.pcap", frames + late))
    assert len(mine) == len(frames)                      # the SYN never completed
    assert "2 IP datagram(s) never completed (1 of them timed out after 30 s;" in \
        warnings_of(stats)


def test_memory_held_is_bounded():
    r = fragments.Reassembler()
    head = g.ipv4_packet("10.0.0.1", "10.0.0.2", 6, b"")[:20]
    chunk = b"x" * 1480
    for ident in range(4000):                            # 8 MB of first fragments
        pkt = g.ipv4_fragment(head, chunk, 0, True, ident=ident)
        assert r.add(pkt, 20, ident, False) is None
        assert r.held <= fragments.IPFRAG_HIGH_THRESH
    assert r.evicted and len(r.pending) * (len(chunk) + fragments.FRAGMENT_OVERHEAD) == r.held
    # the newest datagrams are kept and still complete
    tail = g.ipv4_fragment(head, b"y" * 20, 1480, False, ident=3999)
    whole = r.add(tail, 20, 4000, False)
    assert whole is not None and len(whole) == 20 + 1500
    assert any("MB" in w for w in r.warnings())


def test_oversized_datagram_is_dropped():
    r = fragments.Reassembler()
    head = g.ipv4_packet("10.0.0.1", "10.0.0.2", 6, b"")[:20]
    assert r.add(g.ipv4_fragment(head, b"z" * 16, 65528, False), 20, 0, False) is None
    assert r.oversized == 1 and not r.pending and r.held == 0
    # 65,520 bytes of payload fit the field, not with the 20-byte header: dropped too
    parts = [g.ipv4_fragment(head, b"z" * 16, off, off < 65504) for off in range(0, 65520, 16)]
    assert all(r.add(p, 20, k, False) is None for k, p in enumerate(parts))
    assert r.oversized == 2 and not r.pending and r.held == 0


def test_duplicates_ignored_and_a_late_copy_starts_a_new_datagram():
    r = fragments.Reassembler()
    syn, _ = g.tcp_segment("10.0.0.1", "10.0.0.2", 40000, 80, seq=1, flags=g.SYN)
    parts = g.ipv4_fragments(syn, 8)
    got = [r.add(p, 20, k, False) for k, p in enumerate(parts[:1] + parts + parts[-1:])]
    assert got[:3] == [None] * 3 and got[3] is not None and got[4] is None
    assert r.duplicates == 1 and r.overlapping == 0
    assert len(r.pending) == 1 and "1 IP datagram(s) never completed" in r.warnings()[0]


def test_hostile_tiny_fragments_stay_fast():
    # 8,000 8-byte fragments of one datagram, every other one first, then the rest
    r = fragments.Reassembler()
    head = g.ipv4_packet("10.0.0.1", "10.0.0.2", 17, b"")[:20]
    offsets = list(range(0, 64000, 16)) + list(range(8, 64000, 16))
    for k, off in enumerate(offsets):
        out = r.add(g.ipv4_fragment(head, off.to_bytes(8, "big"), off, off != 63992), 20, k,
                    False)
    assert out is not None and len(out) == 20 + 64000


def test_a_flood_of_tiny_fragments_is_bounded_by_count():
    r = fragments.Reassembler()
    head = g.ipv4_packet("10.0.0.1", "10.0.0.2", 6, b"")[:20]
    for ident in range(20000):
        r.add(g.ipv4_fragment(head, b"t" * 8, 8, True, ident=ident), 20, ident, False)
    assert len(r.pending) <= fragments.IPFRAG_HIGH_THRESH // fragments.FRAGMENT_OVERHEAD
    assert r.evicted
