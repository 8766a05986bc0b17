"""Zeek view on crafted exchanges: conn_state and history derived by hand from Zeek's rules
(docs/zeek-compat.md), Zeek's own connection splitting, and the flow-table columns."""

from __future__ import annotations

import numpy as np
import pcapgen as g
import pytest
from pcapgen import ACK, FIN, PSH, RST, SYN

from traceaudit.capture import open_capture
from traceaudit.flows import FlowBuilder
from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.tracking import zeek_kernel as ZK
from traceaudit.tracking.zeek import ZeekConfig, ZeekTracker

S = 1_000_000_000
FULL = ZeekConfig()


def analyse(tmp_path, frames, zeek=FULL, name="t.pcap"):
    p = tmp_path / name
    p.write_bytes(g.pcap_bytes(frames))
    return analyze_capture(p, ReadOptions(zeek=zeek))


def rows(a):
    return [(r.conn_state, r.history) for r in a.zeek_rows.itertuples()]


def test_normal_exchange_and_close_is_sf(tmp_path):
    conv = g.Conversation().handshake().send("c", ACK | PSH, b"query").send("s", ACK)
    conv.send("s", ACK | PSH, b"answer").send("c", ACK).close_by("c")
    a = analyse(tmp_path, conv.frames)
    # S h A D a d (c's second ACK: A already seen) F f (final ACK: nothing new)
    assert rows(a) == [("SF", "ShADadFf")]
    r = a.zeek_rows.iloc[0]
    assert (r.orig_h, r.orig_p, r.resp_h, r.resp_p) == ("10.0.0.1", 40000, "10.0.0.2", 80)
    assert (r.orig_pkts, r.resp_pkts) == (6, 4)
    f = a.flows.iloc[0]
    assert (f.conn_state, f.history, f.zeek_flipped) == ("SF", "ShADadFf", False)


def test_refused_is_rej(tmp_path):
    conv = g.Conversation().send("c", SYN).send("s", RST | ACK, seq=0)
    assert rows(analyse(tmp_path, conv.frames)) == [("REJ", "Sr")]


def test_unanswered_syn_is_s0(tmp_path):
    conv = g.Conversation().send("c", SYN).send("c", SYN, seq=1000, gap_ns=1 * S)
    assert rows(analyse(tmp_path, conv.frames)) == [("S0", "S")]   # same ISN: no second S


def test_syn_retries_after_the_attempt_timer_start_new_rows(tmp_path):
    # Linux-style retries at 0, 1, 3, 7 s: the attempt timer removes the connection 5 s after
    # its first SYN, so the 7 s retry is a new S0 connection (one tshark stream, two Zeek rows).
    conv = g.Conversation()
    for gap in (0, 1, 2, 4):
        conv.send("c", SYN, seq=1000, gap_ns=gap * S)
    a = analyse(tmp_path, conv.frames)
    assert rows(a) == [("S0", "S"), ("S0", "S")]
    assert a.zeek_rows.orig_pkts.tolist() == [3, 1]
    assert len(a.flows) == 1 and a.flows.iloc[0].conn_state == "S0"


def test_originator_abort_is_rsto(tmp_path):
    conv = g.Conversation().handshake().send("c", RST | ACK)
    assert rows(analyse(tmp_path, conv.frames)) == [("RSTO", "ShAR")]


def test_responder_abort_is_rstr(tmp_path):
    conv = g.Conversation().handshake().send("c", ACK | PSH, b"x").send("s", RST | ACK)
    assert rows(analyse(tmp_path, conv.frames)) == [("RSTR", "ShADr")]


def test_syn_then_rst_is_rstos0(tmp_path):
    conv = g.Conversation().send("c", SYN).send("c", RST, seq=1001)
    assert rows(analyse(tmp_path, conv.frames)) == [("RSTOS0", "SR")]


def test_syn_then_fin_without_answer_is_sh(tmp_path):
    conv = g.Conversation().send("c", SYN).send("c", FIN | ACK, ack=1)
    assert rows(analyse(tmp_path, conv.frames)) == [("SH", "SF")]


def test_midstream_without_syn_is_oth(tmp_path):
    conv = g.Conversation(cport=40000, sport=80)
    conv.send("c", ACK | PSH, b"GET /").send("s", ACK | PSH, b"200 OK")
    a = analyse(tmp_path, conv.frames)
    assert rows(a) == [("OTH", "Dd")]


def test_lone_syn_ack_from_a_likely_server_port_is_flipped(tmp_path):
    conv = g.Conversation(cport=40000, sport=80).send("s", SYN | ACK)
    full = analyse(tmp_path, conv.frames)
    assert rows(full) == [("OTH", "^h")]           # orig = the port-40000 side
    assert full.zeek_rows.iloc[0].orig_p == 40000
    bare = analyse(tmp_path, conv.frames, ZeekConfig.bare(), name="b.pcap")
    assert rows(bare) == [("OTH", "H")]            # -b: no likely server ports, no flip
    assert bare.zeek_rows.iloc[0].orig_p == 80
    assert bool(bare.flows.iloc[0].zeek_flipped)   # Zeek's originator is our server


def test_syn_ack_then_ack_flips_the_connection(tmp_path):
    conv = g.Conversation(cport=40000, sport=5555).send("s", SYN | ACK).send("c", ACK)
    conv.send("c", ACK | PSH, b"hi").send("s", ACK)
    a = analyse(tmp_path, conv.frames, ZeekConfig.bare())
    assert rows(a) == [("S1", "^hADa")]
    assert a.zeek_rows.iloc[0].orig_p == 40000


def test_retransmissions_are_scaled(tmp_path):
    conv = g.Conversation().handshake()
    seq = conv.nxt["c"]
    conv.send("c", ACK | PSH, b"x" * 10)
    for _ in range(10):                              # 10 copies: T at the 1st and the 10th
        conv.send("c", ACK | PSH, b"x" * 10, seq=seq)
    conv.send("s", ACK)
    a = analyse(tmp_path, conv.frames)
    assert rows(a) == [("S1", "ShADTTa")]


def test_zero_window(tmp_path):
    conv = g.Conversation().handshake().send("c", ACK | PSH, b"x")
    conv.frames.append(g.Frame(conv.t + 1, g.ethernet(*g.tcp_segment(
        "10.0.0.2", "10.0.0.1", 80, 40000, seq=conv.nxt["s"], ack=conv.nxt["c"], flags=ACK,
        win=0))))
    a = analyse(tmp_path, conv.frames)
    assert rows(a) == [("S1", "ShADaw")]


def test_same_isn_after_close_is_a_new_zeek_connection(tmp_path):
    # tshark (and our flow table) keep one stream when the SYN repeats the ISN; Zeek treats a
    # SYN on a closed connection as reuse and logs two connections.
    conv = g.Conversation().send("c", SYN).send("s", RST | ACK, seq=0)
    conv.send("c", SYN, seq=1000, gap_ns=S // 2).send("s", RST | ACK, seq=0, ack=1001)
    a = analyse(tmp_path, conv.frames)
    assert rows(a) == [("REJ", "Sr"), ("REJ", "Sr")]
    assert len(a.flows) == 1
    assert a.zeek_rows.first_frame.tolist() == [1, 3]


def test_packets_after_the_close_delay_start_a_new_connection(tmp_path):
    conv = g.Conversation().handshake().close_by("c")
    conv.send("c", ACK, gap_ns=6 * S)                # 6 s after the close: Zeek removed it
    a = analyse(tmp_path, conv.frames)
    assert rows(a) == [("SF", "ShAFf"), ("OTH", "A")]
    assert a.flows.iloc[0].history == "A"            # the Zeek row holding our last packet


def test_inactivity_timeout_splits(tmp_path):
    conv = g.Conversation(sport=8443).handshake().send("c", ACK | PSH, b"a")
    conv.send("c", ACK | PSH, b"b", gap_ns=301 * S)
    assert rows(analyse(tmp_path, conv.frames)) == [("S1", "ShAD"), ("OTH", "D")]


def test_ssh_port_keeps_a_connection_for_an_hour_in_full_mode(tmp_path):
    conv = g.Conversation(sport=22).handshake().send("c", ACK | PSH, b"a")
    conv.send("c", ACK | PSH, b"b", gap_ns=301 * S)
    assert rows(analyse(tmp_path, conv.frames)) == [("S1", "ShAD")]
    assert rows(analyse(tmp_path, conv.frames, ZeekConfig.bare(), name="b.pcap")) == [
        ("S1", "ShAD"), ("OTH", "D")]


def test_bad_checksums_count_as_c_without_minus_c(tmp_path):
    conv = g.Conversation().send("c", SYN, bad_checksum=True)
    checked = analyse(tmp_path, conv.frames, ZeekConfig(ignore_checksums=False))
    assert rows(checked) == [("OTH", "C")]
    assert checked.zeek_rows[["orig_pkts", "resp_pkts"]].values.tolist() == [[0, 0]]
    assert rows(analyse(tmp_path, conv.frames, name="c.pcap")) == [("S0", "S")]   # -C


def test_zeek_view_can_be_switched_off(tmp_path):
    a = analyse(tmp_path, g.Conversation().handshake().frames, zeek=None)
    assert a.zeek_rows is None and "conn_state" not in a.flows.columns


def _direct(tmp_path, frames, seg_flags_by_frame, config=FULL):
    p = tmp_path / "d.pcap"
    p.write_bytes(g.pcap_bytes(frames))
    fb, zt = FlowBuilder(), ZeekTracker(config)
    for b in open_capture(p).batches():
        sf = np.array([seg_flags_by_frame.get(int(f), 0) for f in b["frame"]], np.uint8)
        zt.add(b, fb.add(b), fb, sf)
    return [(r.conn_state, r.history) for r in zt.finish(fb).rows.itertuples()]


def test_acked_payload_never_captured_is_a_content_gap(tmp_path):
    conv = g.Conversation().handshake().send("c", ACK | PSH, b"x" * 100).send("s", ACK)
    # frame 4 cut by the snaplen: the responder acks bytes Zeek's reassembler never got.
    assert _direct(tmp_path, conv.frames, {4: ZK.SEG_PAYLOAD_CUT}) == [("S1", "ShADaG")]
    assert _direct(tmp_path, conv.frames, {}) == [("S1", "ShADa")]


def test_truncated_header_is_ignored_after_lookup(tmp_path):
    conv = g.Conversation().send("s", ACK | PSH, b"x")
    # The connection exists (from port 80, flipped at creation: '^') but the segment is not
    # processed; -b has no flip, so the history stays empty (Zeek logs '-').
    assert _direct(tmp_path, conv.frames, {1: ZK.SEG_HEADER_CUT}) == [("OTH", "^")]
    assert _direct(tmp_path, conv.frames, {1: ZK.SEG_HEADER_CUT}, ZeekConfig.bare()) == [
        ("OTH", "")]


@pytest.mark.parametrize("n_conns", [1, 5000])
def test_tables_grow_and_every_connection_gets_a_row(tmp_path, n_conns):
    frames = []
    for k in range(n_conns):
        conv = g.Conversation(cport=10000 + k % 50000, client=f"10.1.{k // 250}.{k % 250 + 1}")
        conv.t = conv.t0_ns + k * 1000
        conv.handshake()
        frames += conv.frames
    frames.sort(key=lambda f: f.ts_ns)
    p = tmp_path / "many.pcap"
    p.write_bytes(g.pcap_bytes(frames))
    fb, zt = FlowBuilder(), ZeekTracker(initial=16)
    for b in open_capture(p, batch_rows=1000).batches():
        zt.add(b, fb.add(b), fb)
    res = zt.finish(fb, fb.table(str(p)))
    assert len(res.rows) == n_conns
    assert set(res.rows.conn_state) == {"S1"} and set(res.rows.history) == {"ShA"}
    assert (res.conn_state == "S1").all()


def test_removed_connections_free_their_live_rows(tmp_path):
    # 3000 refused connections, 10 ms apart: Zeek deletes each 5 s after its RST, so at most
    # ~500 are held at once; the live table must not grow with the total.
    frames = []
    for k in range(3000):
        conv = g.Conversation(cport=10000 + k, gap_ns=1000)
        conv.t = conv.t0_ns + k * 10_000_000
        conv.send("c", SYN).send("s", RST | ACK, seq=0)
        frames += conv.frames
    p = tmp_path / "rej.pcap"
    p.write_bytes(g.pcap_bytes(frames))
    fb, zt = FlowBuilder(), ZeekTracker(initial=16)
    for b in open_capture(p, batch_rows=500).batches():
        zt.add(b, fb.add(b), fb)
    res = zt.finish(fb)
    assert len(res.rows) == 3000 and set(res.rows.conn_state) == {"REJ"}
    assert len(zt.zc) <= 1024


@pytest.mark.parametrize("mix", [None, 0], ids=["hashed", "every-hash-collides"])
def test_history_codes_give_each_row_its_own_letters(monkeypatch, mix):
    """Rows grouped by a hash of their bytes; with every hash equal (mix 0) the check against
    each group's first row must catch it and group them exactly."""
    import traceaudit.tracking.zeek as Z
    if mix is not None:
        monkeypatch.setattr(Z, "_MIX", np.uint64(mix))
    rng = np.random.default_rng(7)
    words = ["ShADadFf", "S", "ShR", "", "ShADadfF", "D" * ZK.HMAX, "Sr", "ShADadFfR"]
    picked = rng.integers(0, len(words), 500)
    hist = np.zeros((len(picked), ZK.HMAX), np.uint8)
    for row, w in zip(hist, picked):
        row[:len(words[w])] = np.frombuffer(words[w].encode(), np.uint8)
    coded = Z.history_codes(hist)
    assert coded.values().tolist() == [words[w] for w in picked]
    assert len(coded.labels) == len(set(picked.tolist()))
    assert Z.history_codes(hist[:0]).values().tolist() == []


# --- conn.log's other fields (docs/zeek-compat.md, "conn.log output") ----------------------

def _one(a):
    assert len(a.zeek_rows) == 1
    return a.zeek_rows.iloc[0]


def test_sizes_come_from_sequence_progress_across_the_32_bit_wrap(tmp_path):
    # the client's ISN sits 50 below 2**32: its 100 + 200 bytes wrap the sequence space
    conv = g.Conversation(cisn=2**32 - 50).handshake()
    conv.send("c", ACK | PSH, b"x" * 100).send("s", ACK).send("c", ACK | PSH, b"y" * 200)
    conv.send("s", ACK | PSH, b"z" * 7).send("c", ACK).close_by("c")
    r = _one(analyse(tmp_path, conv.frames))
    assert (r.conn_state, int(r.orig_bytes), int(r.resp_bytes)) == ("SF", 300, 7)
    # IP total lengths: 20 + 20 bytes of headers (+ the SYN's 20 bytes of options) + payload
    assert int(r.orig_ip_bytes) == 60 + 140 + 240 + 40 + 40 + 40 + 40
    assert int(r.resp_ip_bytes) == 40 + 40 + 47 + 40
    assert int(r.duration_ns) == (len(conv.frames) - 2) * conv.gap_ns   # (last ACK: both closed)
    assert int(r.missed_bytes) == 0


def test_sizes_count_acked_space_and_gaps_count_missed_bytes(tmp_path):
    # 100 bytes sent, the next 50 never captured, then acked with the 30 after them
    conv = g.Conversation().handshake().send("c", ACK | PSH, b"x" * 100).send("s", ACK)
    conv.send("c", ACK | PSH, b"y" * 50, advance=True, seq=None)
    conv.frames.pop()                                   # lost in the capture
    conv.send("c", ACK | PSH, b"z" * 30).send("s", ACK)
    r = _one(analyse(tmp_path, conv.frames))
    assert r.history == "ShADaG"
    assert (int(r.orig_bytes), int(r.missed_bytes)) == (180, 50)


def test_a_lone_syn_has_no_duration(tmp_path):
    from datetime import datetime, timezone

    from traceaudit.report import zeeklog
    a = analyse(tmp_path, g.Conversation().send("c", SYN).frames)
    r = _one(a)
    assert int(r.duration_ns) == 0
    rec = next(zeeklog.conn_records(zeeklog.ZeekLog("t.pcap", a.zeek_table,
                                                     datetime.now(timezone.utc))))
    # Zeek sets duration, orig_bytes and resp_bytes only when duration > 0
    assert (rec["duration"], rec["orig_bytes"], rec["resp_bytes"]) == (None, None, None)
    assert (rec["orig_pkts"], rec["orig_ip_bytes"], rec["history"]) == (1, 40, "S")
