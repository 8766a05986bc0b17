"""The reader and flow table against tshark: TCP packets, connections, per-direction counts."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from conftest import CORPUS_TRACES, SAMPLE_CAPTURES, needs_tshark, tshark_fields
from traceaudit.capture import open_capture
from traceaudit.flows import FlowBuilder
from traceaudit.flows.addresses import format_addresses

#: Traces where our frame numbers legitimately differ from tshark's, and why.
FRAME_SHIFTED: dict[str, str] = {
    # The two GTP traces whose outer IP packets are fragmented used to be here: we decoded the
    # first fragment, tshark reassembles and shows the segment at the last fragment's frame.
    # The reader reassembles fragments too now (capture/fragments.py), frame for frame.
}


def ours(path):
    """frame -> (connection id, sender 'ip:port'), and the capture's stats."""
    src = open_capture(path)
    builder = FlowBuilder()
    rows = {}
    for batch in src.batches():
        a = builder.add(batch)
        ip = format_addresses(batch["src_hi"], batch["src_lo"], batch["ip_version"])
        for f, c, s, p in zip(batch["frame"].tolist(), a.conn.tolist(), ip.tolist(),
                              batch["sport"].tolist()):
            rows[f] = (c, f"{s}:{p}")
    return rows, src.stats, builder.table(str(path))


def theirs(path):
    """frame -> (tcp.stream, sender 'ip:port') from tshark, skipping ICMP-quoted headers."""
    rows = {}
    total = 0
    for frame, stream, v4, v6, port, protos in tshark_fields(
            path, ["frame.number", "tcp.stream", "ip.src", "ipv6.src", "tcp.srcport",
                   "frame.protocols"]):
        total += 1
        if not stream or ":icmp" in protos:
            continue
        addr = (v6 or v4).split(",")[-1] if not v4 or (v6 and protos.rfind("ipv6") >
                                                      protos.rfind(":ip:")) else v4.split(",")[-1]
        rows[int(frame)] = (int(stream.split(",")[0]), f"{addr}:{port.split(',')[0]}")
    return rows, total


@needs_tshark
@pytest.mark.parametrize("path", CORPUS_TRACES + SAMPLE_CAPTURES, ids=lambda p: p.name)
def test_packets_connections_and_directions_match_tshark(path):
    mine, stats, table = ours(path)
    ref, total = theirs(path)
    assert stats.error is None, stats.error
    assert stats.packets == total, "frame count differs from tshark"
    if path.name in FRAME_SHIFTED:
        # Every tshark TCP frame is ours or the fragment just after one of ours, same stream.
        shifted = {f + 1: v for f, v in mine.items()}
        assert all(mine.get(f) == v or shifted.get(f) == v for f, v in ref.items())
        assert len({c for c, _ in mine.values()}) == len({s for s, _ in ref.values()})
        return
    assert stats.tcp_packets == len(ref), "TCP packet count differs from tshark"
    # Connections: the same partition of packets, with the same numbering as tcp.stream.
    mine_conns = Counter(c for c, _ in mine.values())
    ref_conns = Counter(s for s, _ in ref.values())
    assert len(mine_conns) == len(ref_conns), "number of connections differs from tshark"
    assert sorted(mine_conns.values()) == sorted(ref_conns.values())
    # Per connection and direction, packet counts equal tshark's.
    mine_dir = defaultdict(Counter)
    for c, sender in mine.values():
        mine_dir[c][sender] += 1
    ref_dir = defaultdict(Counter)
    for s, sender in ref.values():
        ref_dir[s][sender] += 1
    assert sorted(map(_key, mine_dir.values())) == sorted(map(_key, ref_dir.values()))
    for row in table.itertuples():
        sent = mine_dir[row.id]
        assert row.client_packets == sent.get(_ep(row.client_ip, row.client_port), 0)
        assert row.server_packets == sent.get(_ep(row.server_ip, row.server_port), 0)
    # Frame by frame: same frames, and our ids are tshark's stream numbers.
    assert set(mine) == set(ref)
    bad = [(f, mine[f], ref[f]) for f in sorted(mine) if mine[f] != ref[f]]
    assert not bad, f"first differences (frame, ours, tshark): {bad[:5]}"


def _ep(ip, port):
    return f"{ip}:{port}"


def _key(counter):
    return tuple(sorted(counter.items()))


def test_frame_shifted_traces_are_in_the_corpus():
    names = {p.name for p in CORPUS_TRACES}
    if names:
        assert set(FRAME_SHIFTED) <= names


@needs_tshark
@pytest.mark.parametrize("path", [p for p in CORPUS_TRACES + SAMPLE_CAPTURES
                                  if p.name not in FRAME_SHIFTED], ids=lambda p: p.name)
def test_connection_times_are_tsharks_exactly(path):
    """start_ts / end_ts are the double nearest the capture's time of the first / last frame:
    what float() makes of tshark's frame.time_epoch, digit for digit (no rounding twice)."""
    _, _, table = ours(path)
    epoch = {int(f): float(t) for f, t in tshark_fields(path, ["frame.number",
                                                               "frame.time_epoch"])}
    for row in table.itertuples():
        assert row.start_ts == epoch[row.first_frame], (row.id, row.first_frame)
        assert row.end_ts == epoch[row.last_frame], (row.id, row.last_frame)
