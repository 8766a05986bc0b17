"""``traceaudit compare``: two captures of the same traffic, made with ``twosided`` (which keeps
the truth of what the path dropped and created while it writes the frames)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import cli_run, needs_tshark, tshark_fields
from pcapgen import ACK, PSH, RST, SYN
from twosided import Connection, Path

from traceaudit.compare import compare_captures


def reported(comparison) -> dict:
    """{"dropped": {(side, frame)}, "created": {...}} as the comparison found them."""
    out = {"dropped": set(), "created": set()}
    for p in comparison.pairs:
        for x in (*p.dropped, *p.created):
            out[x.kind].add((x.seen_in, x.frame))
    return out


def written(path: Path, tmp_path):
    a, b, truth = path.write(tmp_path)
    return a, b, truth


def last_frame_of(b, conn: int) -> int:
    from traceaudit.compare.packets import read_vantage
    v = read_vantage(str(b))
    return int(v.pk["frame"][v.rows_of(conn)[-1]])


def nat_drop_and_reset(offset_ns=3_000_000_000) -> Path:
    """A client behind NAT idles; its next request is dropped by the router, which resets
    the client (conntrack gone: reject with tcp reset); a second connection is untouched."""
    path = Path(offset_ns=offset_ns)
    c = Connection(path, nat=("192.0.2.254", 61000)).handshake().exchange()
    c.send("c", ACK | PSH, b"x" * 50, fate="dropped", gap_ns=5_000_000_000)
    c.send("s", RST, seq=c.nxt["s"], fate="created", gap_ns=100_000)
    Connection(path, client=("10.21.1.2", 40400), nat=("192.0.2.254", 61001), cisn=333_333,
               sisn=444_444, t_ns=1_700_000_000_500_000_000).handshake().exchange().close()
    return path


def test_nat_drop_and_created_reset(tmp_path):
    a, b, truth = written(nat_drop_and_reset(), tmp_path)
    c = compare_captures(str(a), str(b))
    assert reported(c) == truth
    assert len(c.pairs) == 2 and not c.unmatched_a and not c.unmatched_b
    assert {(p.client_a, p.client_b) for p in c.pairs} == {
        ("10.21.1.2:40312", "192.0.2.254:61000"), ("10.21.1.2:40400", "192.0.2.254:61001")}
    assert all("isn" in p.evidence for p in c.pairs)
    assert c.alignment.offset_ns == 3_000_000_000
    assert c.alignment.delay_ns == 40_000
    bad = next(p for p in c.pairs if p.differs)
    assert [x.direction for x in bad.dropped] == ["client->server"]
    assert [(x.direction, x.flags) for x in bad.created] == [("server->client", RST)]


def test_cli_json_filters_and_exit_code(tmp_path):
    a, b, truth = written(nat_drop_and_reset(), tmp_path)
    out = tmp_path / "cmp.json"
    result = cli_run("compare", a, b, "--json", out)
    assert result.exit_code == 1, result.output
    assert "1 packet(s) dropped and 1 created on the path" in result.output
    assert "10.21.1.2:40312 -> 192.0.2.254:61000" in result.output
    doc = json.loads(out.read_text())
    assert doc["summary"] == {"matched": 2, "unmatched_a": 0, "unmatched_b": 0,
                              "translated": 2, "with_differences": 1, "dropped": 1,
                              "created": 1}
    assert doc["clock"]["offset_ns"] == 3_000_000_000
    conn = next(x for x in doc["connections"] if x["dropped"])
    assert conn["translation"] == "10.21.1.2:40312 -> 192.0.2.254:61000"
    assert {(p["seen_in"], p["frame"]) for p in conn["dropped"]} == truth["dropped"]
    assert {(p["seen_in"], p["frame"]) for p in conn["created"]} == truth["created"]
    assert conn["created"][0]["flags"] == "RST" and conn["created"][0]["tsval"] is None
    # both belong after the connection's last frame in b (all of b's packets were seen at both)
    assert [p["after_frame_in_other"] for p in conn["dropped"] + conn["created"]] == [
        last_frame_of(b, conn["b"]["connection"])] * 2
    # clean pair: exit 0
    clean = cli_run("compare", b, b)
    assert clean.exit_code == 0 and "nothing dropped or created" in clean.output


@needs_tshark
def test_display_filters_select_exactly_the_differences_in_tshark(tmp_path):
    a, b, truth = written(nat_drop_and_reset(), tmp_path)
    out = tmp_path / "cmp.json"
    cli_run("compare", a, b, "--json", out)
    conn = next(x for x in json.loads(out.read_text())["connections"] if x["dropped"])
    frames = {int(r[0]) for r in tshark_fields(a, ["frame.number"], conn["a"]["display_filter"])}
    assert {("a", f) for f in frames} == truth["dropped"] | truth["created"]
    whole = tshark_fields(b, ["tcp.srcport"], conn["b"]["display_filter"])
    assert len(whole) == conn["b"]["packets"]


def test_retransmissions_pair_the_copy_that_arrived(tmp_path):
    """The first copy of a request is lost, its retransmission arrives; a response is sent
    twice and both copies arrive; a server segment is lost on its way to the client."""
    path = Path(offset_ns=-250_000_000)
    c = Connection(path, timestamps=False).handshake()
    seq = c.nxt["c"]
    c.send("c", ACK | PSH, b"q" * 80, fate="dropped")
    c.send("c", ACK | PSH, b"q" * 80, seq=seq, gap_ns=200_000_000)
    c.nxt["c"] = seq + 80
    sseq = c.nxt["s"]
    c.send("s", ACK | PSH, b"r" * 300)
    c.send("s", ACK | PSH, b"r" * 300, seq=sseq, gap_ns=220_000_000)
    c.send("s", ACK | PSH, b"s" * 20, fate="dropped")
    c.send("c", ACK).send("c", ACK)          # duplicate ACKs, both delivered
    a, b, truth = written(path, tmp_path)
    cmp = compare_captures(str(a), str(b))
    assert reported(cmp) == truth
    assert truth["dropped"] == {("a", 4), ("b", 7)}   # the first copy, not the second
    (pair,) = cmp.pairs
    assert {x.seen_in: x.direction for x in pair.dropped} == {"a": "client->server",
                                                              "b": "server->client"}


def test_reordering_is_not_a_difference(tmp_path):
    path = Path(delay_ns=30_000)
    c = Connection(path).handshake()
    c.send("c", ACK | PSH, b"1" * 100, late_ns=3_000_000)   # overtaken by the next two
    c.send("c", ACK | PSH, b"2" * 100, gap_ns=500_000)
    c.send("c", ACK | PSH, b"3" * 100, gap_ns=500_000)
    c.send("s", ACK).close()
    a, b, truth = written(path, tmp_path)
    assert truth == {"dropped": set(), "created": set()}
    cmp = compare_captures(str(a), str(b))
    assert reported(cmp) == truth
    assert cmp.pairs[0].seen_both == cmp.pairs[0].packets_a == cmp.pairs[0].packets_b == 10


@pytest.mark.parametrize("offset_s", [-3600.0, 0.0, 0.75, 86400.5])
def test_clock_offset_is_estimated(tmp_path, offset_s):
    path = Path(offset_ns=int(offset_s * 1e9), delay_ns=120_000)
    for i in range(3):
        Connection(path, client=("10.21.1.2", 40000 + i), cisn=10_000 * (i + 1),
                   sisn=99_000 * (i + 1), t_ns=1_700_000_000_000_000_000 + i * 7_000_000
                   ).handshake().exchange().close()
    a, b, _ = written(path, tmp_path)
    al = compare_captures(str(a), str(b)).alignment
    assert abs(al.offset_ns - int(offset_s * 1e9)) < 1000
    assert al.delay_ns == 120_000


def test_client_on_the_far_side(tmp_path):
    """A connection opened from b's side: its client's segments are b's to send, so one
    that a alone holds was created, one that b alone holds was dropped."""
    path = Path()
    c = Connection(path, client=("10.21.2.9", 50000), server=("10.21.1.2", 22),
                   client_side="b").handshake().exchange()
    c.send("c", ACK | PSH, b"z" * 10, fate="dropped")
    c.send("s", RST, seq=c.nxt["s"], fate="created")
    a, b, truth = written(path, tmp_path)
    assert truth == {"dropped": {("b", 7)}, "created": {("b", 8)}}
    cmp = compare_captures(str(a), str(b))
    assert reported(cmp) == truth
    assert cmp.pairs[0].client_side == "b"


def test_unmatched_and_mid_stream_connections(tmp_path):
    """b starts after a: a connection already under way is matched by its data (what came
    before b began is not judged), one that ended before is a's alone, and one whose SYNs
    were all dropped is a's alone too; b has a connection a never saw."""
    path = Path()
    t0 = 1_700_000_000_000_000_000
    Connection(path, client=("10.21.1.2", 41000), cisn=5, sisn=6, t_ns=t0
               ).handshake().exchange().close()
    long = Connection(path, client=("10.21.1.2", 41001), cisn=70_000, sisn=80_000,
                      t_ns=t0 + 10_000_000).handshake()
    for _ in range(6):
        long.exchange(request=10 + _, response=700 + _)
    lost = Connection(path, client=("10.21.1.2", 41002), cisn=123_456, t_ns=t0 + 20_000_000)
    lost.send("c", SYN, fate="dropped").send("c", SYN, seq=123_456, fate="dropped",
                                             gap_ns=1_000_000_000)
    elsewhere = Path()                  # a connection on b's network that a never saw
    Connection(elsewhere, client=("10.21.2.7", 41003), server=("10.21.2.1", 80), cisn=9_999,
               t_ns=t0 + 30_000_000, client_side="b").handshake().close()
    late = t0 + 25_000_000            # b began here: drop its earlier frames
    path.b[:] = [f for f in path.b if f.ts_ns >= late] + elsewhere.b
    a, b, _ = written(path, tmp_path)
    cmp = compare_captures(str(a), str(b))
    assert reported(cmp) == {"dropped": set(), "created": set()}
    matched = {p.client_a: p for p in cmp.pairs}
    assert set(matched) == {"10.21.1.2:41001"}
    assert matched["10.21.1.2:41001"].evidence == ("addresses", "payload")
    assert matched["10.21.1.2:41001"].not_judged > 0
    assert {u.client for u in cmp.unmatched_a} == {"10.21.1.2:41000", "10.21.1.2:41002"}
    assert {u.client for u in cmp.unmatched_b} == {"10.21.2.7:41003"}


def test_same_capture_twice_matches_everything(tmp_path):
    path = nat_drop_and_reset()
    a, _, _ = written(path, tmp_path)
    cmp = compare_captures(str(a), str(a))
    assert len(cmp.pairs) == 2 and cmp.exit_code == 0
    assert all(p.seen_both == p.packets_a for p in cmp.pairs)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    a, b, _ = written(nat_drop_and_reset(), tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(a.read_bytes()[:150])
    for args, expected in (((a, tmp_path / "missing.pcap"), r"missing\.pcap: cannot open"),
                           ((text, b), r"notes\.txt at byte offset 0: not a pcap"),
                           ((cut, b), r"cut\.pcap at byte offset \d+: file ends")):
        result = cli_run("compare", *args)
        assert result.exit_code == 2
        errors = [line for line in result.stderr.splitlines() if line.startswith("traceaudit:")]
        assert errors and re.search(expected, errors[0]), result.stderr
        assert "Traceback" not in result.stderr
    assert cli_run("compare", a).exit_code == 2          # usage


def test_html_is_self_contained_and_shows_both_sides(tmp_path):
    a, b, truth = written(nat_drop_and_reset(), tmp_path)
    out = tmp_path / "cmp.html"
    assert cli_run("compare", a, b, "--html", out).exit_code == 1
    html = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<script" not in html and "@import" not in html and "url(http" not in html
    article = html[html.index("<article"):html.index("</article>")]
    assert article.count('<svg class="ladder"') == 2
    assert f"a: {a}</h4>" in article and f"b: {b}</h4>" in article
    assert "client 10.21.1.2:40312" in article and "client 192.0.2.254:61000" in article
    assert article.count("not seen here: dropped on the path") == 1
    assert article.count("not seen here: created on the path") == 1
    assert article.count('class="cmp-dropped"') == 1 and article.count('class="cmp-created"') == 1


def test_html_in_chromium_draws_the_two_sides_next_to_each_other(tmp_path):
    from htmltest import CHROMIUM, Page
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    a, b, _ = written(nat_drop_and_reset(), tmp_path)
    out = tmp_path / "cmp.html"
    cli_run("compare", a, b, "--html", out)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = Page(browser, out, java_script_enabled=False)
        boxes = [page.page.locator("article svg.ladder").nth(i).bounding_box() for i in (0, 1)]
        width = page.page.locator("main").bounding_box()["width"]
        assert page.requests == [] and page.errors == []
        page.close()
        browser.close()
    left, right = boxes
    assert abs(left["y"] - right["y"]) < 1 and abs(left["height"] - right["height"]) < 1
    assert left["x"] + left["width"] <= right["x"]
    assert left["width"] > 500 and right["x"] + right["width"] <= width + 1


def test_segmentation_offload_is_not_a_difference(tmp_path):
    """The client's host captures 4000-byte TSO segments, the far side sees them on the wire
    in 1448-byte pieces; a lost TSO segment and its retransmission stay one drop."""
    path = Path()
    c = Connection(path).handshake()
    c.send("c", ACK | PSH, b"a" * 4000, wire_mss=1448)
    seq = c.nxt["c"]
    c.send("c", ACK | PSH, b"b" * 3000, fate="dropped")
    c.send("c", ACK | PSH, b"b" * 3000, seq=seq, wire_mss=1448, gap_ns=300_000_000)
    c.nxt["c"] = seq + 3000
    c.send("s", ACK).close()
    a, b, truth = written(path, tmp_path)
    assert truth["dropped"] == {("a", 5)}
    cmp = compare_captures(str(a), str(b))
    assert reported(cmp) == truth
    assert cmp.pairs[0].resegmented == 2 + 6     # a's 2 large segments, b's 3 + 3 pieces


def close_duplicates() -> tuple[Path, int]:
    """Two copies of one pure ACK 1 ms apart; the second is dropped, the first is delivered
    but held up 1.5 ms on the path: by timing alone the arriving copy looks like the second."""
    path = Path(delay_ns=40_000)
    c = Connection(path, timestamps=False).handshake().exchange()
    c.send("c", ACK, late_ns=1_500_000)
    c.send("c", ACK, fate="dropped", gap_ns=1_000_000)
    c.send("s", ACK | PSH, b"more", gap_ns=10_000_000).send("c", ACK)
    return path, 8


def test_copies_sent_close_together_pair_by_transit_time(tmp_path):
    """Duplicates 1 ms apart (within the pairing tolerance), the second dropped: the one
    that arrived is the copy whose transit is nearest the path delay."""
    path = Path(delay_ns=40_000)
    c = Connection(path, timestamps=False).handshake().exchange()
    c.send("c", ACK).send("c", ACK, fate="dropped", gap_ns=1_000_000)
    a, b, truth = written(path, tmp_path)
    assert truth["dropped"] == {("a", 8)}
    assert reported(compare_captures(str(a), str(b))) == truth


@needs_tshark
def test_ip_ids_pair_copies_where_the_path_keeps_them(tmp_path):
    """Timing alone names the wrong copy here; with each packet's IP ID (tshark's, put into
    the columns as a reader that decodes it would) the path is seen to keep IP IDs and the
    copy that arrived is the one with the same ID."""
    import numpy as np

    from traceaudit.compare import compare_vantages
    from traceaudit.compare.packets import read_vantage
    path, lost = close_duplicates()
    a, b, truth = written(path, tmp_path)
    assert truth["dropped"] == {("a", lost)}
    va, vb = read_vantage(str(a)), read_vantage(str(b))
    if "ip_id" in va.pk:                        # a reader that decodes IP IDs itself
        assert reported(compare_vantages(va, vb)) == truth
        del va.pk["ip_id"], vb.pk["ip_id"]
    assert reported(compare_vantages(va, vb))["dropped"] == {("a", lost - 1)}   # timing only
    for v, f in ((va, a), (vb, b)):
        ids = {int(n): int(i, 16) for n, i in tshark_fields(f, ["frame.number", "ip.id"])}
        v.pk["ip_id"] = np.array([ids[n] for n in v.pk["frame"].tolist()], np.int32)
    assert reported(compare_vantages(va, vb)) == truth


def test_a_shared_isn_alone_does_not_make_two_connections_one(tmp_path):
    """A connection of a and one of b whose clients happened to pick the same ISN (no
    timestamps: their SYNs are alike) are not matched: apart from that SYN they have nothing
    in common, and the SYN's times disagree with the clock offset the other connection
    shows by 20 s."""
    path = Path()
    Connection(path, cisn=7, sisn=8).handshake().exchange().close()
    Connection(path, client=("10.21.1.2", 40001), cisn=424_242, sisn=1, timestamps=False,
               t_ns=1_700_000_000_100_000_000).handshake().exchange()
    other = Path()
    Connection(other, client=("10.21.1.3", 40002), cisn=424_242, sisn=2, timestamps=False,
               t_ns=1_700_000_020_000_000_000).handshake().exchange()
    path.b[:] = [f for f in path.b if f.ts_ns < 1_700_000_000_100_000_000] + other.b
    a, b, _ = written(path, tmp_path)
    cmp = compare_captures(str(a), str(b))
    assert [p.client_a for p in cmp.pairs] == ["10.21.1.2:40312"]
    assert [u.client for u in cmp.unmatched_a] == ["10.21.1.2:40001"]
    assert [u.client for u in cmp.unmatched_b] == ["10.21.1.3:40002"]
    assert cmp.exit_code == 0


def test_a_hosts_side_is_decided_by_all_its_connections(tmp_path):
    """One of a client's three connections looks, by its timing alone, as if the client were
    on b's side (b stamped the client's packets 200 µs early); the client's other connections
    outvote it, so the request lost in it is dropped, not created."""
    path = Path(delay_ns=40_000)
    for i, skew in enumerate((0, -200_000, 0)):
        c = Connection(path, client=("10.21.1.2", 40000 + i), cisn=1000 * (i + 1),
                       sisn=900_000 * (i + 1), t_ns=1_700_000_000_000_000_000 + i * 50_000_000,
                       skew_ns=skew).handshake().exchange()
        if skew:
            c.send("c", ACK | PSH, b"lost", fate="dropped")
    a, b, truth = written(path, tmp_path)
    cmp = compare_captures(str(a), str(b))
    assert reported(cmp) == truth and len(truth["dropped"]) == 1
    assert {p.client_side for p in cmp.pairs} == {"a"}


def test_ipv6_through_prefix_translation(tmp_path):
    path = Path()
    c = Connection(path, client=("2001:db8:1::2", 50000), server=("2001:db8:2::1", 443),
                   nat=("2001:db8:99::2", 50000)).handshake().exchange()
    c.send("s", ACK | PSH, b"late", fate="dropped")
    c.send("c", RST, seq=c.nxt["c"], fate="created")
    a, b, truth = written(path, tmp_path)
    assert truth == {"dropped": {("b", 7)}, "created": {("b", 8)}}
    cmp = compare_captures(str(a), str(b))
    assert reported(cmp) == truth
    (pair,) = cmp.pairs
    assert (pair.client_a, pair.client_b) == ("[2001:db8:1::2]:50000", "[2001:db8:99::2]:50000")


def test_a_capture_that_stopped_earlier_is_said_to_be_in_doubt(tmp_path):
    """b stops before a does (a pcap does not say when capture stopped): a packet a saw
    after b's last one is reported with that doubt, in words and in the JSON; one before
    b's last packet is reported plainly."""
    path = nat_drop_and_reset()
    cmp = compare_captures(*map(str, written(path, tmp_path)[:2]))
    # the router's drop and reset are the last packets of the capture: b (the server's
    # side) has nothing after them, so nothing shows it was still capturing
    late = [x for p in cmp.pairs for x in (*p.dropped, *p.created)]
    assert late and all(x.after_other_end for x in late)
    t0 = 1_700_000_000_000_000_000
    early = Connection(path, client=("10.21.1.2", 40600), nat=("192.0.2.254", 61003),
                       cisn=777_777, sisn=888_888, t_ns=t0 + 1_000_000_000).handshake()
    early.send("c", ACK | PSH, b"y" * 20, fate="dropped", gap_ns=1_000_000)
    early.exchange().close()
    (tmp_path / "early").mkdir()
    cmp = compare_captures(*map(str, written(path, tmp_path / "early")[:2]))
    by_client = {p.client_a: p for p in cmp.pairs}
    (drop,) = by_client["10.21.1.2:40600"].dropped
    assert not drop.after_other_end            # b's capture went on after it
    from traceaudit.report import compare_json
    from traceaudit.report.compare_text import packet_text
    doc = json.loads(compare_json.render(cmp, tool_version="t", generated_at="g",
                                         elapsed_s=0))
    flags = {x["frame"]: x["after_other_capture_end"] for c in doc["connections"]
             for x in c["dropped"] + c["created"]}
    assert sorted(flags.values()) == [False, True, True]
    assert "(b has no packet after it: b may have stopped capturing first)" in packet_text(
        late[0])
    assert "stopped" not in packet_text(drop)
