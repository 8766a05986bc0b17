"""Who sent an RST (issue 21): the tracker's rst_origin facts, middlebox-reset and
idle-timeout-reset, on captures built with pcapgen as seen from the client's side of a router
(the server's segments arrive with TTL 63, what the router forges with 64)."""

from __future__ import annotations

import json
import struct

import pytest

import pcapgen as g
from conftest import CORPUS_TRACES, SAMPLES, needs_corpus
from pcapgen import ACK, FIN, PSH, RST, SYN
from traceaudit.pipeline import analyze_capture
from traceaudit.rules import run_rules
from traceaudit.rules.config import RulesConfig
from traceaudit.tracking.states import Confidence, RstEvidence, RstOrigin

SERVER, CLIENT = "10.21.2.2", "10.21.1.2"
BLAMING = {"rst-after-premature-close", "linger-zero-abort", "unread-data-reset"}
S = 1_000_000_000


def ts_option(tsval: int, tsecr: int = 0) -> bytes:
    return b"\x01\x01" + struct.pack("!BBII", 8, 10, tsval, tsecr)


class Side:
    """One connection's packets as a host's stack writes them: timestamps on every segment,
    IDs from a per-socket counter, its own TTL as the capture sees it."""

    def __init__(self, conv: g.Conversation, who: str, ident: int, tsval: int) -> None:
        self.conv, self.who, self.ident, self.tsval = conv, who, ident, tsval

    def send(self, flags: int, data: bytes = b"", *, gap_ns: int = 1_000_000, **kw) -> None:
        self.ident += 1
        self.tsval += max(gap_ns // 1_000_000, 1)
        self.conv.send(self.who, flags, data, options=ts_option(self.tsval), ident=self.ident,
                       gap_ns=gap_ns, **kw)


def connection(cport: int, t0: int) -> tuple[g.Conversation, Side, Side]:
    conv = g.Conversation(client=CLIENT, server=SERVER, cport=cport, sport=5432, t0_ns=t0,
                          cisn=1000 + cport, sisn=9000 + cport, ttl={"c": 64, "s": 63})
    c, s = Side(conv, "c", 0x1000 + cport, 100), Side(conv, "s", 0x7000 + cport, 5000)
    c.send(SYN)
    s.send(SYN | ACK)
    c.send(ACK)
    for k in range(3):
        c.send(ACK | PSH, b"query %d" % k)
        s.send(ACK | PSH, b"result %d" % k * 4)
    c.send(ACK)
    return conv, c, s


def forged_reset(conv: g.Conversation, *, ttl: int = 64, seq: int | None = None) -> None:
    """What nft's `reject with tcp reset` sends for a client segment: a bare RST from the
    server's address, seq = the segment's ACK, ID 0, DF, no options, the router's TTL."""
    conv.send("s", RST, seq=conv.nxt["s"] if seq is None else seq, ttl=ttl, ident=0,
              gap_ns=50_000)


def idle_timeout_capture(tmp_path, idles=(2.0, 3.0, 3.6, 4.4, 5.0, 6.0), timeout=4.0,
                         forged_ttl=64):
    """Connections to one service idle for ``idles`` seconds, then the client queries again:
    after ``timeout`` the router has forgotten the connection and answers with a reset."""
    frames = []
    for k, idle in enumerate(idles):
        conv, c, s = connection(40000 + k, 1_700_000_000 * S + k * 20 * S)
        c.send(ACK | PSH, b"query 2", gap_ns=int(idle * S))
        if idle > timeout:
            forged_reset(conv, ttl=forged_ttl)
        else:
            s.send(ACK | PSH, b"result 2")
            c.send(FIN | ACK)
            s.send(FIN | ACK)
            c.send(ACK)
        frames += conv.frames
    frames.sort(key=lambda f: f.ts_ns)
    path = tmp_path / "idle.pcap"
    path.write_bytes(g.pcap_bytes(frames))
    return path


def findings(path):
    a = analyze_capture(path)
    return a, run_rules(a, RulesConfig())


def test_idle_timeout_resets_are_the_paths_and_give_the_timeout(tmp_path):
    a, found = findings(idle_timeout_capture(tmp_path))
    ends = a.tracked.endpoints
    reset = [3, 4, 5]
    for c in range(6):
        server = ends[c, 1]
        if c in reset:
            assert server["rst_origin"] == RstOrigin.PATH
            assert server["rst_evidence"] & RstEvidence.TTL
            assert (server["rst_ttl"], server["ttl_lo"], server["ttl_hi"]) == (64, 63, 63)
        else:
            assert server["rst_origin"] == RstOrigin.NO_RST
    assert not BLAMING & {f.rule for f in found}
    boxes = [f for f in found if f.rule == "middlebox-reset"]
    assert sorted((f.connection, f.endpoint) for f in boxes) == [(c, "server") for c in reset]
    assert all("ttl" in f.details["evidence"] and f.details["rst_ttl"] == 64 and
               f.details["usual_ttl"] == "63" for f in boxes)
    assert boxes[0].display_filter == (
        f"tcp.stream eq {boxes[0].connection} && (ip.src == {SERVER} || frame.number in "
        "{" + ", ".join(map(str, boxes[0].frames)) + "})")
    idle = sorted((f for f in found if f.rule == "idle-timeout-reset"), key=lambda f: f.connection)
    assert [f.connection for f in idle] == reset
    for f, want in zip(idle, (4.4, 5.0, 6.0)):
        assert f.details["idle_s"] == pytest.approx(want, abs=0.01)
        assert f.details["rst_origin"] == "path" and f.details["confidence"] == "high"
        assert f.details["reset_from_s"] == pytest.approx(4.4, abs=0.01)
        assert f.details["longest_survived_s"] == pytest.approx(3.6, abs=0.01)
        assert f.details["timeout_estimate_s"] == pytest.approx(4.0, rel=0.1)
    assert f"every connection to {SERVER}:5432 idle for >= 4.4 s was reset" in \
        idle[0].message.lower()


def test_an_idle_reset_the_server_sent_itself_needs_the_service_threshold(tmp_path):
    """The same resets with the server's own TTL: no middlebox-reset; the idle pattern across
    the service still makes idle-timeout-reset, with medium confidence."""
    a, found = findings(idle_timeout_capture(tmp_path, forged_ttl=63))
    assert not {f.rule for f in found} & {"middlebox-reset"}
    idle = [f for f in found if f.rule == "idle-timeout-reset"]
    assert len(idle) == 3 and all(f.details["rst_origin"] == "endpoint" and
                                  f.details["confidence"] == "medium" for f in idle)
    # one reset alone, the server's own: nothing says idle timeout
    _, alone = findings(idle_timeout_capture(tmp_path, idles=(2.0, 5.0), forged_ttl=63))
    assert not [f for f in alone if f.rule == "idle-timeout-reset"]


def stream_with_injected_reset(tmp_path, *, forged_ttl: int = 64, race: bool = True):
    """The server streams; an injector resets the client with the server's next sequence
    number while the server's segments keep arriving (the race)."""
    conv, c, s = connection(40100, 1_700_000_000 * S)
    for _ in range(5):
        s.send(ACK | PSH, b"x" * 1000)
    c.send(ACK)
    seq = conv.nxt["s"]
    forged_reset(conv, ttl=forged_ttl, seq=seq)
    if race:
        for _ in range(3):
            s.send(ACK | PSH, b"y" * 1000, gap_ns=200_000)
    conv.send("c", RST, seq=conv.nxt["c"], ident=0)       # the client, reset, answers that
    path = tmp_path / "race.pcap"
    path.write_bytes(g.pcap_bytes(conv.frames))
    return path


def test_injected_reset_lost_the_race(tmp_path):
    a, found = findings(stream_with_injected_reset(tmp_path))
    server = a.tracked.endpoints[0, 1]
    assert server["rst_origin"] == RstOrigin.PATH and server["rst_confidence"] == Confidence.HIGH
    assert server["rst_evidence"] & RstEvidence.RACE and server["rst_evidence"] & RstEvidence.TTL
    assert server["race_segs"] == 3 and server["race_frame"] == server["rst_frame"] + 1
    (f,) = [f for f in found if f.rule == "middlebox-reset"]
    assert f.endpoint == "server" and f.details["confidence"] == "high"
    assert {"ttl", "race", "no_timestamps"} <= set(f.details["evidence"])
    assert f.frames[-1] == server["race_frame"] and "kept coming after it" in f.message
    assert not BLAMING & {f.rule for f in found}
    assert not [f for f in found if f.rule == "idle-timeout-reset"]


def test_the_race_alone_is_enough_and_the_ttl_alone_too(tmp_path):
    a, _ = findings(stream_with_injected_reset(tmp_path, forged_ttl=63))
    server = a.tracked.endpoints[0, 1]
    assert server["rst_evidence"] & (RstEvidence.RACE | RstEvidence.TTL) == RstEvidence.RACE
    assert server["rst_origin"] == RstOrigin.PATH
    b, _ = findings(stream_with_injected_reset(tmp_path, race=False))
    server = b.tracked.endpoints[0, 1]
    assert server["rst_evidence"] & (RstEvidence.RACE | RstEvidence.TTL) == RstEvidence.TTL
    assert server["rst_origin"] == RstOrigin.PATH
    assert server["rst_confidence"] == Confidence.HIGH         # with no timestamps beside it


def test_a_reset_the_endpoint_sent_stays_its_own(tmp_path):
    """SO_LINGER 0 through the router: its socket's RST|ACK, TTL 63, next ID, timestamps."""
    conv, c, s = connection(40200, 1_700_000_000 * S)
    s.send(RST | ACK)
    path = tmp_path / "linger.pcap"
    path.write_bytes(g.pcap_bytes(conv.frames))
    a, found = findings(path)
    server = a.tracked.endpoints[0, 1]
    assert (server["rst_origin"], server["rst_confidence"], server["rst_evidence"]) == \
        (RstOrigin.ENDPOINT, Confidence.HIGH, 0)
    rules = {f.rule for f in found}
    assert "linger-zero-abort" in rules and "middlebox-reset" not in rules


def test_a_socketless_reset_of_the_endpoints_kernel_is_not_the_paths(tmp_path):
    """No timestamps, ID from another counter, sequence number short of snd_nxt: what a
    kernel's reset without a socket looks like; weak signs, never a path verdict."""
    conv, c, s = connection(40300, 1_700_000_000 * S)
    s.send(ACK | PSH, b"z" * 100)
    conv.send("s", RST, seq=conv.nxt["s"] - 100, ident=0x3333, gap_ns=5_000_000)
    path = tmp_path / "socketless.pcap"
    path.write_bytes(g.pcap_bytes(conv.frames))
    a, found = findings(path)
    server = a.tracked.endpoints[0, 1]
    assert server["rst_evidence"] == RstEvidence.IP_ID | RstEvidence.NO_TIMESTAMPS | \
        RstEvidence.SEQ
    assert (server["rst_origin"], server["rst_confidence"]) == \
        (RstOrigin.ENDPOINT, Confidence.MEDIUM)
    assert "middlebox-reset" not in {f.rule for f in found}


def test_a_socket_shaped_reset_out_of_line_is_the_paths(tmp_path):
    """Timestamps present (a socket's reset) but the TSval older and the ID out of sequence:
    two weak signs a socket cannot show."""
    conv, c, s = connection(40400, 1_700_000_000 * S)
    s.send(ACK | PSH, b"more")                  # (four steps of its IDs: a sequence)
    conv.send("s", RST | ACK, options=ts_option(4000), ident=0x0101)
    path = tmp_path / "socket-shaped.pcap"
    path.write_bytes(g.pcap_bytes(conv.frames))
    a, found = findings(path)
    server = a.tracked.endpoints[0, 1]
    assert server["rst_evidence"] == RstEvidence.IP_ID | RstEvidence.TSVAL
    assert (server["rst_origin"], server["rst_confidence"]) == \
        (RstOrigin.PATH, Confidence.MEDIUM)
    (f,) = [f for f in found if f.rule == "middlebox-reset"]
    assert f.details["evidence"] == ["ip_id", "tsval"]
    high = run_rules(a, RulesConfig(overrides={"middlebox-reset": {"high_only": True}}))
    assert not [f for f in high if f.rule == "middlebox-reset"]


def test_json_report_gives_each_endpoints_rst_origin(tmp_path):
    from traceaudit.report import json_report
    a, found = findings(stream_with_injected_reset(tmp_path))
    doc = json.loads(b"".join(bytes(x) for x in json_report.render_chunks(
        [a], [f.to_dict() for f in found], tool_version="t")))
    (conn,) = doc["connections"]
    assert conn["server"]["rst_origin"] == {
        "origin": "path", "confidence": "high",
        "evidence": ["ttl", "race", "no_timestamps"], "rst_ttl": 64, "usual_ttl": "63"}
    assert conn["client"]["rst_origin"]["origin"] == "endpoint"
    assert json_report.connection_entries(a)[0]["server"]["rst_origin"] == \
        conn["server"]["rst_origin"]


def test_no_sample_capture_reset_is_attributed_to_the_path():
    """Every RST of the kernel-recorded samples is its endpoint's own (a new sample recorded
    through a router holds path resets and says so in its truth file)."""
    for path in sorted(SAMPLES.glob("*.pcap*")):
        truth = json.loads(path.with_name(path.name.split(".")[0] + ".truth.json").read_text()) \
            if path.with_name(path.name.split(".")[0] + ".truth.json").exists() else {}
        if "middlebox-reset" in {r["rule"] for r in truth.get("findings", {})
                                 .get("required", [])}:
            continue
        ends = analyze_capture(path).tracked.endpoints
        assert not (ends["rst_origin"] == RstOrigin.PATH).any(), path.name


#: The corpus traces where a reset is attributed to the path, and why (checked by hand):
#: tunnels.Teredo.pcap: three RST|ACKs with TTL 255 carry web servers' addresses whose own
#: segments arrive with TTL 53: a device next to the capture (an initial TTL of 255 is a
#: router's or firewall's) reset the connections on their behalf.
CORPUS_PATH_RESETS = {"tunnels.Teredo.pcap": [(0, "server"), (1, "server"), (2, "server")]}


@needs_corpus
@pytest.mark.corpus
def test_corpus_path_resets_are_only_the_known_ones():
    got = {}
    for path in CORPUS_TRACES:
        a = analyze_capture(path)
        found = [(f.connection, f.endpoint) for f in run_rules(
            a, RulesConfig(select=["middlebox-reset"]))]
        if found:
            got[path.name] = sorted(found)
    assert got == CORPUS_PATH_RESETS


# -- the real-kernel samples recorded through a router (sample_pcaps/record_path.py) ------------
PATH_TRUTHS = sorted(SAMPLES.glob("path-*.truth.json"))


@pytest.mark.parametrize("truth_path", PATH_TRUTHS, ids=lambda p: p.name.split(".")[0])
def test_router_samples_resets_are_attributed_as_the_router_made_them(truth_path):
    """The resets the router created (its nft reject, the injector: truth ``path_packets``,
    from the router's own counters and logs) are exactly the RSTs attributed to the path, each
    on strong evidence; no endpoint is blamed for them; an idle-timeout sample's
    idle-timeout-reset finds the configured timeout within 10 %."""
    t = json.loads(truth_path.read_text())
    a, found = findings(SAMPLES / t["capture"])
    created = {p["frame"] for p in t["path_packets"] if p["kind"] == "created" and
               "R" in p["flags"] and p.get("frame") is not None}
    ends = a.tracked.endpoints
    path = ends["rst_origin"] == RstOrigin.PATH
    assert set(ends["rst_frame"][path].tolist()) == created
    assert ((ends["rst_evidence"][path] & (RstEvidence.TTL | RstEvidence.RACE)) != 0).all()
    blamed = {(f.connection, f.endpoint) for f in found if f.rule in BLAMING}
    forged = {(int(c), ("client", "server")[e]) for c, e in zip(*path.nonzero())}
    assert not blamed & forged
    idle = [f for f in found if f.rule == "idle-timeout-reset"]
    if "idle_timeout_s" in t and created:
        assert idle and all(f.details["timeout_estimate_s"] ==
                            pytest.approx(t["idle_timeout_s"], rel=0.1) for f in idle)
        assert all(f.details["longest_survived_s"] < t["idle_timeout_s"] <=
                   f.details["reset_from_s"] for f in idle)
