"""Packet excerpts kept for the ladders: handshake, last packets, evicted control packets."""

from __future__ import annotations

import numpy as np

import pcapgen as g
from pcapgen import ACK, FIN, PSH, RST, SYN
from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.tracking import excerpts as X


def analyse(tmp_path, frames, **options):
    p = tmp_path / "t.pcap"
    p.write_bytes(g.pcap_bytes(frames))
    return analyze_capture(p, ReadOptions(**options))


def test_short_connection_is_kept_whole(tmp_path):
    conv = g.Conversation().handshake().send("c", ACK | PSH, b"hello").send("s", ACK)
    conv.close_by("c")
    ex = analyse(tmp_path, conv.frames).excerpts
    pkts = ex.packets(0)
    assert [p.frame for p in pkts] == list(range(1, 9))
    assert [p.idx for p in pkts] == list(range(8))
    syn, synack, _, data = pkts[:4]
    assert (syn.flags, syn.rel_seq, syn.from_server) == (SYN, 0, False)
    assert (synack.flags, synack.rel_seq, synack.rel_ack, synack.from_server) == \
        (SYN | ACK, 0, 1, True)
    assert (data.rel_seq, data.rel_ack, data.payload_len) == (1, 1, 5)
    assert pkts[4].rel_ack == 6                      # the server acknowledges the 5 bytes
    assert int(ex.count[0]) == 8


def test_long_connection_keeps_head_ring_and_evicted_fin(tmp_path):
    conv = g.Conversation().handshake().send("c", FIN | ACK).send("s", ACK)   # frames 4, 5
    for _ in range(30):
        conv.send("s", ACK | PSH, b"x" * 10).send("c", ACK)
    conv.send("s", RST | ACK)
    n = len(conv.frames)                               # 3 + 2 + 60 + 1 = 66
    ex = analyse(tmp_path, conv.frames).excerpts
    pkts = ex.packets(0)
    frames = [p.frame for p in pkts]
    assert frames == [1, 2, 3, 4] + list(range(n - X.RING + 1, n + 1))
    assert [p.idx for p in pkts] == [f - 1 for f in frames]      # ordinals: elisions countable
    assert pkts[3].flags == FIN | ACK and not pkts[3].from_server
    assert pkts[-1].flags == RST | ACK and pkts[-1].from_server
    assert int(ex.count[0]) == n


def test_pool_grows_and_is_bounded_per_connection(tmp_path):
    convs = []
    for k in range(3):
        conv = g.Conversation(cport=41000 + k, t0_ns=1_700_000_000_000_000_000 + k)
        conv.handshake()
        for _ in range(20):                           # 20 retransmitted FINs: all control
            conv.send("c", FIN | ACK, advance=False)
        for _ in range(X.RING):
            conv.send("s", ACK)
        convs.append(conv)
    frames = sorted((f for c in convs for f in c.frames), key=lambda f: f.ts_ns)
    p = tmp_path / "t.pcap"
    p.write_bytes(g.pcap_bytes(frames))
    rec = X.ExcerptRecorder(initial=1)
    rec.pool = np.zeros((1, X.N_POOL), np.int64)      # force pool growth mid-batch
    from traceaudit.capture import open_capture
    from traceaudit.flows.table import FlowBuilder
    builder = FlowBuilder()
    for batch in open_capture(p).batches():
        rec.add(batch, builder.add(batch), builder)
    ex = rec.finish(builder)
    for c in range(3):
        pkts = ex.packets(c)
        fins = [q for q in pkts if q.flags & FIN]
        assert len(fins) == X.POOL_MAX                 # the 20 FINs left the ring; 8 are kept
        assert len(pkts) == X.HEAD + X.POOL_MAX + X.RING
        assert [q.idx for q in pkts] == sorted(q.idx for q in pkts)


def test_memory_per_connection_is_bounded(tmp_path):
    conv = g.Conversation().handshake()
    for _ in range(200):
        conv.send("c", ACK | PSH, b"y")
    ex = analyse(tmp_path, conv.frames).excerpts
    assert len(ex.packets(0)) == X.HEAD + X.RING
    assert ex.nbytes < 1000
