"""Endpoint trackers on crafted exchanges: states, timelines, close roles and kinds."""

from __future__ import annotations

import pcapgen as g
from pcapgen import ACK, FIN, PSH, RST, SYN
from traceaudit.pipeline import analyze_capture
from traceaudit.rules import run_rules
from traceaudit.rules.config import RulesConfig
from traceaudit.tracking.connections import state_names
from traceaudit.tracking.states import Reason
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE, EV_TS


def analyse(tmp_path, frames, name="t.pcap"):
    p = tmp_path / name
    p.write_bytes(g.pcap_bytes(frames))
    return analyze_capture(p)


def timeline(a, conn=0, endpoint="client"):
    e = 0 if endpoint == "client" else 1
    ev = a.events[(a.events[:, EV_CONN] == conn) & (a.events[:, EV_ENDPOINT] == e)]
    return list(zip(ev[:, EV_FRAME].tolist(), state_names(ev[:, EV_STATE]).tolist()))


def states(a, conn=0, endpoint="client"):
    return [s for _, s in timeline(a, conn, endpoint)]


def test_normal_close_by_client(tmp_path):
    conv = g.Conversation().handshake().send("c", ACK | PSH, b"q").send("s", ACK | PSH, b"r")
    conv.close_by("c")
    a = analyse(tmp_path, conv.frames)
    assert timeline(a, endpoint="client") == [(1, "SYN_SENT"), (2, "ESTABLISHED"),
                                              (6, "FIN_WAIT_1"), (7, "TIME_WAIT")]
    assert timeline(a, endpoint="server") == [(2, "SYN_RECEIVED"), (3, "ESTABLISHED"),
                                              (6, "CLOSE_WAIT"), (7, "LAST_ACK"), (8, "CLOSED")]
    row = a.flows.iloc[0]
    assert (row.close_role, row.close_kind) == ("client", "graceful")
    assert (row.client_state, row.server_state) == ("TIME_WAIT", "CLOSED")


def test_fin_acked_separately_goes_through_fin_wait_2(tmp_path):
    conv = g.Conversation().handshake().send("s", FIN | ACK).send("c", ACK)
    conv.send("c", ACK | PSH, b"late data").send("s", ACK).send("c", FIN | ACK).send("s", ACK)
    a = analyse(tmp_path, conv.frames)
    assert states(a, endpoint="server") == ["SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1",
                                            "FIN_WAIT_2", "TIME_WAIT"]
    assert states(a, endpoint="client")[-3:] == ["CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert a.flows.iloc[0].close_role == "server"


def test_simultaneous_close_passes_through_closing(tmp_path):
    conv = g.Conversation().handshake()
    conv.send("c", FIN | ACK)
    conv.send("s", FIN | ACK, ack=conv.cisn + 1)    # does not acknowledge the client's FIN
    conv.send("c", ACK).send("s", ACK)
    a = analyse(tmp_path, conv.frames)
    for side in ("client", "server"):
        assert states(a, endpoint=side)[-3:] == ["FIN_WAIT_1", "CLOSING", "TIME_WAIT"], side
    assert a.flows.iloc[0].close_role == "simultaneous"


def test_refused(tmp_path):
    conv = g.Conversation().send("c", SYN).send("s", RST | ACK, seq=0)
    a = analyse(tmp_path, conv.frames)
    assert states(a) == ["SYN_SENT", "CLOSED"]
    assert states(a, endpoint="server") == ["CLOSED"]
    assert a.flows.iloc[0].close_kind == "refused"


def test_abort_with_rst(tmp_path):
    conv = g.Conversation().handshake().send("c", ACK | PSH, b"req").send("s", ACK)
    conv.send("c", RST | ACK)
    a = analyse(tmp_path, conv.frames)
    assert states(a)[-1] == "CLOSED" and states(a, endpoint="server")[-1] == "CLOSED"
    row = a.flows.iloc[0]
    assert (row.close_role, row.close_kind) == ("client", "reset")


def test_out_of_window_rst_is_ignored(tmp_path):
    conv = g.Conversation().handshake().send("c", ACK | PSH, b"x" * 100).send("s", ACK)
    conv.send("c", RST, seq=conv.cisn - 5000)
    a = analyse(tmp_path, conv.frames)
    assert states(a, endpoint="server")[-1] == "ESTABLISHED"


def test_time_wait_skipped_is_corrected_with_hindsight(tmp_path):
    conv = g.Conversation().handshake().send("c", FIN | ACK).send("s", FIN | ACK)
    # the client's final ACK is lost (not in the capture); the server retransmits its FIN
    conv.send("s", FIN | ACK, seq=conv.nxt["s"] - 1, gap_ns=200_000_000)
    conv.send("c", RST, seq=conv.nxt["c"])          # bare RST: no socket any more
    a = analyse(tmp_path, conv.frames)
    assert timeline(a)[-1] == (5, "CLOSED") and "TIME_WAIT" not in states(a)
    assert states(a, endpoint="server")[-2:] == ["LAST_ACK", "CLOSED"]


def test_lost_final_ack_answered_from_time_wait(tmp_path):
    conv = g.Conversation().handshake().send("c", FIN | ACK).send("s", FIN | ACK).send("c", ACK)
    conv.send("s", FIN | ACK, seq=conv.nxt["s"] - 1, gap_ns=200_000_000).send("c", ACK)
    a = analyse(tmp_path, conv.frames)
    assert states(a)[-1] == "TIME_WAIT"
    # the first ACK never arrived: the server stayed in LAST_ACK until frame 8's ACK
    assert timeline(a, endpoint="server")[-2:] == [(5, "LAST_ACK"), (8, "CLOSED")]


def test_time_wait_expires_after_2msl_and_is_recycled_by_a_new_syn(tmp_path):
    old = g.Conversation().handshake().close_by("c")
    reuse = g.Conversation(t0_ns=old.t + 5_000_000_000, cisn=90_000).handshake()
    late = g.Conversation(cport=40001, t0_ns=old.t + 70_000_000_000).handshake()
    a = analyse(tmp_path, old.frames + reuse.frames + late.frames)
    assert list(a.flows.id) == [0, 1, 2]
    assert timeline(a, 0)[-1] == (7, "CLOSED")           # recycled by the SYN at frame 7
    b = analyse(tmp_path, old.frames + late.frames, "b.pcap")
    last = timeline(b, 0)[-1]
    assert last == (-1, "CLOSED")                         # 2×MSL later, at no frame
    # the client entered TIME_WAIT on the server's FIN (frame 5)
    assert b.events[(b.events[:, EV_CONN] == 0)][:, 2].max() == old.frames[4].ts_ns + 60 * 10**9


def test_capture_starting_mid_connection(tmp_path):
    conv = g.Conversation().send("c", ACK | PSH, b"data").send("s", ACK).close_by("s")
    a = analyse(tmp_path, conv.frames)
    assert states(a)[0] == "ESTABLISHED" and a.flows.iloc[0].midstream
    assert states(a, endpoint="server")[-1] == "TIME_WAIT"


def test_sequence_numbers_wrap_around(tmp_path):
    conv = g.Conversation(cisn=0xFFFFFF00, sisn=0xFFFFFFF0).handshake()
    conv.send("c", ACK | PSH, b"a" * 1000).send("s", ACK | PSH, b"b" * 1000).close_by("c")
    a = analyse(tmp_path, conv.frames)
    assert states(a)[-1] == "TIME_WAIT" and states(a, endpoint="server")[-1] == "CLOSED"


def test_legitimate_half_close(tmp_path):
    conv = g.Conversation().handshake().send("c", FIN | ACK).send("s", ACK)
    for _ in range(3):
        conv.send("s", ACK | PSH, b"more").send("c", ACK)
    conv.send("s", FIN | ACK).send("c", ACK)
    a = analyse(tmp_path, conv.frames)
    assert states(a)[-3:] == ["FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
    assert states(a, endpoint="server")[-3:] == ["CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert a.flows.iloc[0].close_kind == "graceful"


def test_port_reuse_splits_like_wireshark(tmp_path):
    """A pure SYN with a new ISN splits; a retransmitted SYN or a SYN-ACK does not."""
    first = g.Conversation().handshake().close_by("c")
    again = g.Conversation(t0_ns=first.t + 10**9)        # same ISN as before: same stream
    again.send("c", SYN)
    other = g.Conversation(t0_ns=first.t + 2 * 10**9, cisn=777).send("c", SYN)
    other.send("c", SYN, seq=777)                          # retransmission
    a = analyse(tmp_path, first.frames + again.frames + other.frames)
    assert a.flows.id.tolist() == [0, 1]
    assert a.flows.client_packets.tolist() == [5, 2]


def test_unanswered_syn_ack_leaves_the_client_in_syn_sent(tmp_path):
    """SYN-ACKs retransmitted with no word from the client never reached it (half-open)."""
    conv = g.Conversation().send("c", SYN).send("s", SYN | ACK)
    conv.send("s", SYN | ACK, seq=conv.sisn, gap_ns=10**9).send("s", SYN | ACK, seq=conv.sisn)
    a = analyse(tmp_path, conv.frames)
    assert states(a) == ["SYN_SENT"]
    assert states(a, endpoint="server") == ["SYN_RECEIVED"]
    answered = g.Conversation().send("c", SYN).send("s", SYN | ACK)
    answered.send("s", SYN | ACK, seq=answered.sisn, gap_ns=10**9).send("c", ACK)
    b = analyse(tmp_path, answered.frames, "b.pcap")
    assert states(b) == ["SYN_SENT", "ESTABLISHED"]


# -- a half-open connection that the server gives up (SYN-ACK retransmissions exhausted) -----
S = 1_000_000_000


def half_open(synack_gaps_s, end_gap_s, client_acks=False):
    """SYN, SYN-ACK, then SYN-ACKs again after ``synack_gaps_s`` (seconds each), the client
    ACKing each when ``client_acks``; then, ``end_gap_s`` later, a packet of another
    connection ends the capture."""
    conv = g.Conversation().send("c", SYN).send("s", SYN | ACK, advance=False)
    if client_acks:
        conv.send("c", ACK, ack=conv.sisn + 1)
    for gap in synack_gaps_s:
        conv.send("s", SYN | ACK, seq=conv.sisn, ack=conv.cisn + 1, gap_ns=int(gap * S))
        if client_acks:
            conv.send("c", ACK, ack=conv.sisn + 1)
    other = g.Conversation(cport=40001, t0_ns=conv.t + int(end_gap_s * S)).send("c", SYN)
    return conv.frames + other.frames


def test_server_gives_up_when_its_next_synack_is_not_sent(tmp_path):
    # SYN-ACKs at 0, 1 s, 3 s: the next was due at 7 s; the capture goes on to 13 s
    a = analyse(tmp_path, half_open([1, 2], 10))
    ev = a.events[(a.events[:, EV_CONN] == 0) & (a.events[:, EV_ENDPOINT] == 1)]
    assert state_names(ev[:, EV_STATE]).tolist() == ["SYN_RECEIVED", "CLOSED"]
    assert ev[-1, EV_FRAME] == -1 and ev[-1, EV_REASON] == Reason.SYN_ACK_GAVE_UP
    synack = a.tracked.endpoints[0, 1]
    assert ev[-1, EV_TS] == synack["syn_last_ns"] + 4 * S == synack["gave_up_ns"]
    (f,) = [f for f in run_rules(a, RulesConfig()) if f.rule == "half-open-handshake"]
    assert f.details["server_gave_up"] and "gave up" in f.message
    assert "SYN_RECEIVED for 7.0 s" in f.message


def test_no_give_up_before_the_next_synack_could_be_late(tmp_path):
    # the capture ends 0.5 s after the retransmission due at 7 s: not evidence enough
    a = analyse(tmp_path, half_open([1, 2], 4.5))
    assert states(a, endpoint="server") == ["SYN_RECEIVED"]
    assert a.tracked.endpoints[0, 1]["gave_up_ns"] == 0


def test_one_synack_tells_no_backoff(tmp_path):
    a = analyse(tmp_path, half_open([], 60))
    assert states(a, endpoint="server") == ["SYN_RECEIVED"]


def test_synack_after_the_clients_ack_means_the_ack_was_lost(tmp_path):
    # the client ACKs every SYN-ACK, but the server keeps retransmitting: none arrived
    a = analyse(tmp_path, half_open([1, 2], 10, client_acks=True))
    assert states(a, endpoint="server") == ["SYN_RECEIVED", "CLOSED"]
    assert states(a, endpoint="client") == ["SYN_SENT", "ESTABLISHED"]
    (f,) = [f for f in run_rules(a, RulesConfig()) if f.rule == "half-open-handshake"]
    assert f.details["ack_lost"] and f.details["server_gave_up"]


def test_server_established_again_once_it_sends(tmp_path):
    # one ACK lost (SYN-ACK again), the next arrives: the server's first ACK shows it
    conv = g.Conversation().send("c", SYN).send("s", SYN | ACK, advance=False)
    conv.send("c", ACK, ack=conv.sisn + 1)
    conv.send("s", SYN | ACK, seq=conv.sisn, ack=conv.cisn + 1, gap_ns=S)
    conv.nxt["s"] = conv.sisn + 1
    conv.send("c", ACK).send("c", ACK | PSH, b"request").send("s", ACK | PSH, b"response")
    a = analyse(tmp_path, conv.frames)
    assert timeline(a, endpoint="server") == [(2, "SYN_RECEIVED"), (7, "ESTABLISHED")]
    assert not [f for f in run_rules(a, RulesConfig()) if f.rule == "half-open-handshake"]
