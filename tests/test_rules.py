"""Rules against the kernel-recorded sample captures: every capture yields exactly the findings
its truth file requires (plus only neutral ones), and every rule has a capture that must raise
it and one that must not."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from conftest import CORPUS, SAMPLES, needs_corpus
from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.rules import registry, run_rules
from traceaudit.rules.config import RulesConfig
from traceaudit.rules.model import Severity
from traceaudit.tracking.states import EndpointState
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_STATE, TrackerConfig

TRUTHS = sorted(SAMPLES.glob("*.truth.json"))


def truth(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.truth.json").read_text())


@lru_cache(maxsize=None)
def analysis_of(name: str):
    """The sample analysed as an operator would: with the recording host's tcp_fin_timeout."""
    t = truth(name)
    fin_timeout = float(t["sysctls"].get("net.ipv4.tcp_fin_timeout", 60))
    return analyze_capture(SAMPLES / t["capture"],
                           ReadOptions(tracker=TrackerConfig(fin_timeout_s=fin_timeout)))


def findings_of(name: str, config: RulesConfig | None = None):
    return run_rules(analysis_of(name), config or RulesConfig())


def subject(f) -> tuple:
    return (f.rule, f.endpoint, f.connection, f.host, f.details.get("cause"))


def required(t: dict) -> set[tuple]:
    return {(r["rule"], r.get("endpoint"), r.get("connection"), r.get("host"), r.get("cause"))
            for r in t["findings"]["required"]}


@pytest.mark.parametrize("name", [p.name.split(".")[0] for p in TRUTHS])
def test_sample_yields_exactly_its_findings(name):
    t = truth(name)
    found = findings_of(name)
    got = {subject(f) for f in found}
    assert required(t) <= got, f"missing: {required(t) - got}"
    allowed = {r[0] for r in required(t)} | set(t["findings"]["neutral"])
    extra = [(f.rule, f.endpoint, f.connection) for f in found if f.rule not in allowed]
    assert not extra, f"findings the truth file does not list: {extra}"
    assert not {f.rule for f in found} & set(t["findings"]["forbidden"])
    for r in t["findings"]["required"]:
        if "confidence" in r:       # the truth file says how sure the finding must be
            (f,) = [f for f in found if subject(f) == required({"findings": {"required": [r]}})
                    .pop()]
            assert f.details["confidence"] == r["confidence"], (f.rule, f.message)
    if t.get("close_kind") in ("graceful",) or name.startswith(("normal-close", "half-close",
                                                                "ipv6-normal")):
        assert all(f.severity == Severity.INFO for f in found), "a normal close is not a bug"


def test_every_rule_has_a_capture_that_raises_it_and_one_that_must_not():
    truths = {p.name.split(".")[0]: json.loads(p.read_text()) for p in TRUTHS}
    for rule in registry().values():
        bad = [n for n, t in truths.items() if any(r["rule"] == rule.name
                                                    for r in t["findings"]["required"])]
        good = [n for n, t in truths.items() if rule.name in t["findings"]["forbidden"]]
        assert bad and good, f"{rule.name}: needs a capture that raises it and one that must not"
        assert any(f.rule == rule.name for f in findings_of(bad[0]))
        assert not any(f.rule == rule.name for f in findings_of(good[0]))


def test_rule_metadata_is_complete():
    codes = set()
    for name, rule in registry().items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", name)
        assert re.fullmatch(r"TA\d{3}", rule.code) and rule.code not in codes
        codes.add(rule.code)
        assert rule.title and len(rule.rationale) > 80 and len(rule.remediation) > 40
        assert rule.references
        assert set(rule.threshold_help) == set(rule.thresholds), name
    assert {"half-closed-leak", "fin-wait-2-hang", "rst-after-premature-close",
            "linger-zero-abort", "unread-data-reset", "connection-refused",
            "half-open-handshake", "simultaneous-close", "lost-final-ack", "time-wait-reuse",
            "time-wait-pileup"} <= set(registry())


def test_findings_carry_evidence_a_person_can_open():
    for p in TRUTHS:
        for f in findings_of(p.name.split(".")[0]):
            assert f.frames and all(isinstance(x, int) and x >= 1 for x in f.frames)
            assert f.frames == sorted(set(f.frames)), f"{f.rule}: frames repeat or unsorted"
            assert f.display_filter and f.message and f.remediation
            assert (f.connection is None) == (f.host is not None)
            if f.connection is not None and "connections" not in f.details:
                streams = {f.connection, f.details.get("previous_connection", f.connection)}
                assert f.display_filter == (
                    f"tcp.stream eq {f.connection}" if len(streams) == 1 else
                    "tcp.stream in {" + ", ".join(map(str, sorted(streams))) + "}")
                assert any(re.search(rf"\b{x}\b", f.message) for x in f.frames), f.message


def test_unread_and_linger_findings_say_how_sure_they_are():
    """The same RST ends a close() with unread data and an SO_LINGER 0 abort: "high" only with
    evidence beyond the connection's own segments and acknowledgments (its HTTP/1.x payload,
    or the service's other connections)."""
    (u,) = [f for f in findings_of("unread-data-reset") if f.rule == "unread-data-reset"]
    (lz,) = [f for f in findings_of("linger-zero-server") if f.rule == "linger-zero-abort"]
    # the second request's segment is on the wire, and the payload shows it is a request that
    # got no response
    assert u.details["confidence"] == "high" and \
        "received 2 HTTP requests and answered 1 before the RST" in u.message
    # one connection, the server's answer last: nothing shows that it had read everything
    assert lz.details["confidence"] == "medium" and "unread data" in lz.message
    assert "nothing was left unanswered" not in lz.message
    assert (lz.details["http_requests_in"], lz.details["http_responses_out"]) == (1, 1)
    # a service that resets every connection: an abort policy
    policy = [f for f in findings_of("linger-zero-service") if f.rule == "linger-zero-abort"]
    assert [f.connection for f in policy] == [0, 1, 2]
    assert all(f.details["confidence"] == "high" and f.details["other_resets"] == 2 and
               f.details["other_fin_closes"] == 0 and "abort policy" in f.message
               for f in policy)
    # a service that FINs everywhere else, and the pipelined request it never answered (two
    # requests in one segment, one response): the payload settles it
    (pipelined,) = [f for f in findings_of("pipelined-unread") if f.rule == "unread-data-reset"]
    assert pipelined.connection == 3 and pipelined.details["other_fin_closes"] == 3
    assert pipelined.details["confidence"] == "high" and "reset only this one" in \
        pipelined.message
    assert "received 2 HTTP requests and answered 1 before the RST" in pipelined.message


@pytest.mark.parametrize("name", [p.name.split(".")[0] for p in TRUTHS])
def test_linger_zero_is_high_only_with_evidence(name):
    for f in findings_of(name):
        if f.rule == "linger-zero-abort" and f.details["confidence"] == "high":
            policy = f.details["other_resets"] >= 2 and f.details["other_fin_closes"] == 0
            assert policy or "had sent no data" in f.message, f.message
        if f.rule == "linger-zero-abort":
            # more requests in than responses out is unread data, never an abort policy
            assert f.details["http_requests_in"] <= f.details["http_responses_out"]


def test_leak_duration_and_still_open_are_reported():
    (leak,) = [f for f in findings_of("close-wait-leak-rst") if f.rule == "half-closed-leak"]
    assert leak.details["still_open_at_capture_end"] is False
    assert 3.9 < leak.details["duration_s"] < 4.2
    (held,) = [f for f in findings_of("keepalive-half-closed") if f.rule == "half-closed-leak"]
    assert held.details["still_open_at_capture_end"] is True
    assert held.details["keepalive_probes"] >= 1 and held.details["duration_s"] > 3


def test_thresholds_change_verdicts():
    cfg = RulesConfig()
    cfg.apply_set("rules.half-closed-leak.min_duration=10")
    assert not any(f.rule == "half-closed-leak" for f in findings_of("close-wait-leak-rst", cfg))
    cfg = RulesConfig()
    cfg.apply_set("rules.time-wait-pileup.min_sockets=5000")
    assert not any(f.rule == "time-wait-pileup" for f in findings_of("time-wait-pileup", cfg))


def test_fin_timeout_decides_expired_versus_data_after_close():
    """With the host's real tcp_fin_timeout (3 s) the late write met an expired orphan; told
    the Linux default of 60 s, the same RST is a reply to data after close."""
    t = truth("close-wait-leak-rst")
    a = analyze_capture(SAMPLES / t["capture"])            # default fin_timeout 60 s
    causes = {f.details.get("cause") for f in run_rules(a, RulesConfig())
              if f.rule == "rst-after-premature-close"}
    assert causes == {"data_after_close"}


def test_fingerprints_are_stable_and_distinct():
    first = [f.fingerprint for f in findings_of("time-wait-reuse-server")]
    analysis_of.cache_clear()
    again = [f.fingerprint for f in findings_of("time-wait-reuse-server")]
    assert first == again and len(set(first)) == len(first)


def test_rules_read_tracker_facts_as_read_only_copies():
    """Every rule reads the same field copies (View.ep / View.conn): they must equal the
    tracker's facts, and none may be changed by a rule for the rules after it."""
    from traceaudit.rules.common import View
    a = analysis_of("close-wait-leak")
    v = View.of(a)
    n = len(a.table)
    ends, conns = a.tracked.endpoints[:n], a.tracked.conns[:n]
    for e in (0, 1):
        for field in ("rst_count", "fin_ns", "last_data_frame"):
            column = v.ep(e, field)
            assert np.array_equal(column, ends[:, e][field])
            assert column is v.ep(e, field) and not column.flags.writeable
            assert column.flags.c_contiguous and column.dtype == np.int64
    assert v.ep(0, "fin_ns") is not v.ep(1, "fin_ns")
    assert np.array_equal(v.conn("refused"), conns["refused"])
    with pytest.raises(ValueError):
        v.conn("refused")[:] = 1
    with pytest.raises(ValueError):
        v.ep(0, "no_such_fact")
    c = int(np.flatnonzero(conns["closer"] >= 0)[0])
    assert v.row(c, 1) == {name: int(ends[c, 1][name]) for name in ends.dtype.names}
    assert v.row(c)["closer"] == int(conns[c]["closer"])
    assert v.take([c], 0, "fin_frame", "rst_count") == [[int(ends[c, 0]["fin_frame"])],
                                                         [int(ends[c, 0]["rst_count"])]]


def test_fingerprints_made_with_the_findings_are_those_of_their_final_fields():
    """Rules' findings get their fingerprints as they are made; a rule that set a field the
    fingerprint is made of afterwards would leave a stale one (baselines would stop
    matching). Every rule's findings on the samples, against a fingerprint made afresh."""
    from dataclasses import replace
    seen = set()
    for t in TRUTHS:
        for f in findings_of(t.name.split(".")[0]):
            assert f.fingerprint == replace(f, _fingerprint="").fingerprint, (t.name, f.rule)
            seen.add(f.rule)
    assert seen == set(registry())


@needs_corpus
@pytest.mark.parametrize("trace", ["tls.pop3-starttls.pcap", "tls.imap-starttls.pcap",
                                   "tls.xmpp-starttls.pcap"])
def test_reset_after_data_after_close_is_not_a_skipped_time_wait(trace):
    """The server closes, the client still sends (a TLS alert) and its FIN; the server's socket
    answers with a bare RST. Its data reset the socket: no TIME_WAIT was ever held."""
    a = analyze_capture(CORPUS / "traces" / trace)
    (f,) = [f for f in run_rules(a, RulesConfig()) if f.rule == "rst-after-premature-close"]
    assert (f.endpoint, f.details["cause"]) == ("server", "data_after_close")
    ev = a.events[(a.events[:, EV_CONN] == 0) & (a.events[:, EV_ENDPOINT] == 1)]
    states = [EndpointState(s).name for s in ev[:, EV_STATE]]
    assert "TIME_WAIT" not in states and states[-1] == "CLOSED", states


def test_a_leak_seen_only_because_the_capture_ended_is_low_confidence():
    """close-wait-leak.pcap's last packet is 43 ms after the FIN (tcpdump ran 3.5 s longer, but
    a pcap does not say so): reported, but one severity level lower."""
    (short,) = [f for f in findings_of("close-wait-leak") if f.rule == "half-closed-leak"]
    assert short.details["confidence"] == "low" and short.severity == Severity.WARNING
    assert "how long it lasted is unknown" in short.message
    (long,) = [f for f in findings_of("keepalive-half-closed") if f.rule == "half-closed-leak"]
    assert long.details["confidence"] == "high" and long.severity == Severity.ERROR


def test_fast_time_wait_peak_equals_the_per_host_sweep():
    from traceaudit.rules.time_wait_pileup import busiest_host_peak, peaks, time_wait_intervals
    for p in TRUTHS:
        a = analysis_of(p.name.split(".")[0])
        iv = time_wait_intervals(a)
        slow = int(peaks(iv, ["host"])["peak"].max()) if len(iv) else 0
        assert busiest_host_peak(a) == slow, p.name
        if len(iv):
            # only hosts with at least `floor` stays in all are swept: the same answer when
            # one of them is the busiest, 0 when none has that many
            stays = iv["host"].value_counts()
            for floor in (stays.max(), stays.max() + 1, slow, slow + 1):
                hosts = stays.index[stays >= floor]
                want = int(peaks(iv[iv["host"].isin(hosts)], ["host"])["peak"].max()) \
                    if len(hosts) else 0
                assert busiest_host_peak(a, int(floor)) == want, (p.name, floor)


# -- HTTP/1.x payload evidence (issue 20): requests received vs responses sent -------------------
def _http_reset(tmp_path, requests: list[bytes], responses: list[bytes], *, retransmit=False):
    """One connection, no other of the service: the client sends ``requests`` (one segment
    each), the server answers with ``responses`` and resets."""
    import pcapgen as g
    from pcapgen import ACK, PSH, RST
    conv = g.Conversation().handshake()
    for r in requests:
        conv.send("c", ACK | PSH, r)
        if retransmit:      # the same bytes again: counted once
            conv.send("c", ACK | PSH, r, seq=conv.nxt["c"] - len(r))
    conv.send("s", ACK)
    for r in responses:
        conv.send("s", ACK | PSH, r)
    conv.send("c", ACK).send("s", RST | ACK)
    p = tmp_path / "http.pcap"
    p.write_bytes(g.pcap_bytes(conv.frames))
    a = analyze_capture(p)
    return a, run_rules(a, RulesConfig())


GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_pipelined_request_left_unanswered_is_unread_data_with_high_confidence(tmp_path):
    a, found = _http_reset(tmp_path, [GET + GET.replace(b"/a", b"/b")], [OK])
    server = a.tracked.endpoints[0, 1]
    assert (server["http_requests_in"], server["http_responses_out"]) == (2, 1)
    (f,) = [f for f in found if f.rule in ("unread-data-reset", "linger-zero-abort")]
    assert f.rule == "unread-data-reset" and f.endpoint == "server"
    assert f.details["confidence"] == "high"
    assert "received 2 HTTP requests and answered 1 before the RST" in f.message
    assert (f.details["http_requests_in"], f.details["http_responses_out"]) == (2, 1)


def test_as_many_responses_as_requests_stays_linger_zero_not_high(tmp_path):
    a, found = _http_reset(tmp_path, [GET], [OK], retransmit=True)
    server = a.tracked.endpoints[0, 1]
    assert (server["http_requests_in"], server["http_responses_out"]) == (1, 1)
    (f,) = [f for f in found if f.rule in ("unread-data-reset", "linger-zero-abort")]
    assert f.rule == "linger-zero-abort" and f.details["confidence"] != "high"
    assert "1 HTTP request received and 1 response sent" in f.message
