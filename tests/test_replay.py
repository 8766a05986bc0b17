"""A capture merged with a time-shifted copy of itself (same 4-tuples, same ISNs, 200 s later).

Wireshark keeps one ``tcp.stream`` for both copies of a connection, and so do the connection
ids; the trackers begin a new incarnation at the copy (``kernel.pyx``: the connection had gone
quiet 2×MSL before, and was closed or gets a new SYN), so the copy is neither retransmissions
nor keepalives of the original. Facts and findings are the last incarnation's: the replayed
capture has the single capture's findings, 200 s and one capture's frames later.
"""

from __future__ import annotations

import re

import pytest

from conftest import SAMPLES
from pcapgen import replayed
from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.rules import run_rules
from traceaudit.rules.config import RulesConfig
from traceaudit.tracking.states import EndpointState, Reason
from traceaudit.tracking.tracker import (EV_CONN, EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE,
                                         EV_TS, TrackerConfig)
from test_rules import truth

SHIFT_S = 200
#: classic pcap samples whose 4-tuples keep one ISN (time-wait-reuse-*: the copy's SYN has
#: another ISN than the 4-tuple's latest connection, so it opens new connection ids, as in
#: Wireshark: tested below)
SAMPLE_NAMES = sorted(p.name[:-5] for p in SAMPLES.glob("*.pcap")
                      if not p.name.startswith("time-wait-reuse"))


def options(name: str) -> ReadOptions:
    fin = truth(name)["sysctls"].get("net.ipv4.tcp_fin_timeout")
    return ReadOptions(tracker=TrackerConfig(fin_timeout_s=float(fin) if fin else 60.0))


def analysed(path, name):
    a = analyze_capture(path, options(name))
    return a, run_rules(a, RulesConfig())


def shifted(text: str, frames: int) -> str:
    return re.sub(r"(frames? )(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) + frames}", text)


@pytest.fixture(scope="module")
def replays(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay")

    def make(name: str, shift_s: float = SHIFT_S):
        path = out / f"{name}-{shift_s}.pcap"
        if not path.exists():
            path.write_bytes(replayed((SAMPLES / f"{name}.pcap").read_bytes(), shift_s))
        return path
    return make


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_replay_has_the_findings_of_one_copy(name, replays):
    one, found = analysed(SAMPLES / f"{name}.pcap", name)
    two, found2 = analysed(replays(name), name)
    n_frames = int(one.table["last_frame"].max())
    assert len(two.table) == len(one.table)             # one tcp.stream for both copies
    assert set(two.tracked.conns["incarnation"].tolist()) == {1}
    key = lambda f: (f.rule, f.connection, f.endpoint, f.host, f.details.get("cause"))  # noqa
    assert sorted(map(key, found2)) == sorted(map(key, found))
    mine = {key(f): f for f in found}
    for f in found2:
        g = mine[key(f)]
        if f.connection is None:                       # host-level: the copy's pile-up
            continue
        assert f.ts == pytest.approx(g.ts + SHIFT_S, abs=1e-6)
        assert f.frames == [x + n_frames if x > 0 else x for x in g.frames]
        assert f.message == shifted(g.message, n_frames)
        assert f.details == {k: x + n_frames if k.endswith("_frame") and x > 0 else x
                             for k, x in g.details.items()}


@pytest.mark.parametrize("name", ["normal-close-client", "lost-final-ack", "close-wait-leak",
                                  "keepalive-half-closed", "time-wait-skipped",
                                  "simultaneous-close"])
def test_timeline_shows_the_new_incarnation(name, replays):
    one, _ = analysed(SAMPLES / f"{name}.pcap", name)
    two, _ = analysed(replays(name), name)
    n_frames = int(one.table["last_frame"].max())
    first_again = int(one.table["first_frame"][0]) + n_frames
    for e in (0, 1):
        ev1 = one.events[(one.events[:, EV_CONN] == 0) & (one.events[:, EV_ENDPOINT] == e)]
        ev2 = two.events[(two.events[:, EV_CONN] == 0) & (two.events[:, EV_ENDPOINT] == e)]
        marks = [i for i, r in enumerate(ev2.tolist()) if r[EV_REASON] == Reason.NEW_INCARNATION]
        assert len(marks) == 1
        mark = ev2[marks[0]]
        assert mark[EV_STATE] == EndpointState.CLOSED and mark[EV_FRAME] == first_again
        again = ev2[marks[0] + 1:].copy()
        expect = ev1.copy()
        expect[:, EV_TS] += SHIFT_S * 10**9
        expect[:, EV_FRAME] = [f + n_frames if f > 0 else f for f in expect[:, EV_FRAME]]
        assert again.tolist() == expect.tolist()
        # the original's own entries come first, unchanged up to its end
        assert ev2[:marks[0]][:, EV_TS].max() <= mark[EV_TS]


def test_port_reuse_with_new_isns_opens_new_connections(replays):
    one, found = analysed(SAMPLES / "time-wait-reuse-client.pcap", "time-wait-reuse-client")
    two, found2 = analysed(replays("time-wait-reuse-client"), "time-wait-reuse-client")
    assert len(two.table) == 2 * len(one.table)
    assert two.tracked.conns["incarnation"].tolist() == [0] * len(two.table)
    assert sum(f.rule == "time-wait-reuse" for f in found2) == \
        2 * sum(f.rule == "time-wait-reuse" for f in found)


def test_a_copy_within_time_wait_is_no_new_incarnation(replays):
    """30 s later the client's TIME_WAIT (60 s) still holds the 4-tuple: no new incarnation."""
    two, _ = analysed(replays("normal-close-client", 30), "normal-close-client")
    assert two.tracked.conns["incarnation"].tolist() == [0]
    assert not (two.events[:, EV_REASON] == Reason.NEW_INCARNATION).any()
