"""``traceaudit compare`` on the two-vantage sample recordings (``sample_pcaps/path-*``: real
kernels in namespaces, a router between them): every packet the router dropped or created is
listed, and nothing else. The truth is the recorder's (``path_packets`` in each side's truth
file, from a capture on the router itself), not traceaudit's."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLES, cli_run

PAIRS = sorted(
    (SAMPLES / t["capture"], SAMPLES / t["pair"], t)
    for t in (json.loads(p.read_text()) for p in SAMPLES.glob("*.truth.json"))
    if t.get("pair") and t.get("vantage") == "client") if SAMPLES.is_dir() else []


def _truth(path) -> dict:
    return json.loads(path.with_name(path.name.replace(".pcap", ".truth.json")).read_text())


def test_there_are_two_sided_samples():
    assert len(PAIRS) >= 2, "no two-vantage sample recordings found in sample_pcaps/"


@pytest.mark.parametrize("client,server,truth", PAIRS, ids=[p[2]["name"] for p in PAIRS])
def test_every_path_packet_and_nothing_else(tmp_path, client, server, truth):
    out = tmp_path / "compare.json"
    result = cli_run("compare", client, server, "--json", out)
    doc = json.loads(out.read_text())
    expected = set()
    for side, path in (("a", client), ("b", server)):
        for p in _truth(path).get("path_packets", []):
            if p["frame"] is not None:
                expected.add((p["kind"], side, p["frame"]))
    found = {(kind, x["seen_in"], x["frame"]) for c in doc["connections"]
             for kind in ("dropped", "created") for x in c[kind]}
    assert found == expected
    assert result.exit_code == (1 if expected else 0), result.output
    # every connection of one side is the other's, whatever the router translated, and
    # matched with the twin the recorder names
    assert doc["summary"]["unmatched_a"] == doc["summary"]["unmatched_b"] == 0
    twins = {(c["client"], c["server"], c["pair_connection"]["client"],
              c["pair_connection"]["server"]) for c in truth["connections"]
             if c.get("pair_connection")}
    matched = {(c["a"]["client"], c["a"]["server"], c["b"]["client"], c["b"]["server"])
               for c in doc["connections"]}
    assert twins and matched == twins
    if truth["router"].get("nat"):
        assert doc["summary"]["translated"] == doc["summary"]["matched"] > 0
        for c in doc["connections"]:
            assert c["a"]["client"] != c["b"]["client"]
            assert c["a"]["server"] == c["b"]["server"]


@pytest.mark.parametrize("client,server,truth", PAIRS, ids=[p[2]["name"] for p in PAIRS])
def test_captures_given_the_other_way_round(client, server, truth):
    """The server's side given first: the timing still puts each client on its side, so the
    same packets are dropped and created, seen in the swapped files."""
    from traceaudit.compare import compare_captures
    straight = compare_captures(str(client), str(server))
    swapped = compare_captures(str(server), str(client))
    flip = {"a": "b", "b": "a"}
    listed = lambda c, swap: {(x.kind, flip[x.seen_in] if swap else x.seen_in, x.frame)
                              for p in c.pairs for x in (*p.dropped, *p.created)}
    assert listed(swapped, True) == listed(straight, False)
    assert {p.client_side for p in swapped.pairs} == {"b"}
