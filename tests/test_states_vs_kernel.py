"""Inferred endpoint states against the kernel's own (`ss -tan` samples in the truth files).

At every sample time, each endpoint's inferred state must equal the kernel's, except for samples
taken within TOLERANCE of a transition (ours or the kernel's): the capture and `ss` cannot be
read at exactly the same instant. The agreement rate over all samples must be at least 98%.
Samples where `ss` missed the socket (the truth says "missed") are not compared.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import pytest

from conftest import SAMPLES
from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.tracking.connections import state_names
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_STATE, EV_TS, TrackerConfig

TOLERANCE_S = 0.005
TRUTHS = sorted(SAMPLES.glob("*.truth.json"))


def endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def tracker_config(truth: dict) -> TrackerConfig:
    """The analyzer is told the host's tcp_fin_timeout when the scenario set one (as a user
    would pass --fin-timeout); everything else is inferred from the capture."""
    fin = truth.get("sysctls", {}).get("net.ipv4.tcp_fin_timeout")
    return TrackerConfig(fin_timeout_s=float(fin)) if fin else TrackerConfig()


def our_timelines(analysis):
    ev = analysis.events
    names = state_names(ev[:, EV_STATE]).tolist() if len(ev) else []
    out: dict[tuple[int, int], tuple[list[float], list[str]]] = {}
    for c, e, ts, name in zip(ev[:, EV_CONN].tolist(), ev[:, EV_ENDPOINT].tolist(),
                              (ev[:, EV_TS] / 1e9).tolist(), names):
        times, states = out.setdefault((c, e), ([], []))
        times.append(ts)
        states.append(name)
    return out


def state_at(timeline, ts):
    times, states = timeline
    i = bisect.bisect_right(times, ts)
    return "UNSEEN" if i == 0 else states[i - 1]


def compare(truth_path: Path):
    truth = json.loads(truth_path.read_text())
    analysis = analyze_capture(truth_path.parent / truth["capture"],
                               ReadOptions(tracker=tracker_config(truth)))
    flows = analysis.flows
    timelines = our_timelines(analysis)
    used: set[int] = set()
    agree = total = 0
    mismatches = []
    for conn in truth["connections"]:
        samples = conn.get("ss") or []
        if not samples:
            continue
        cip, cport = endpoint(conn["client"])
        sip, sport = endpoint(conn["server"])
        match = flows[(flows.client_ip == cip) & (flows.client_port == cport) &
                      (flows.server_ip == sip) & (flows.server_port == sport) &
                      ~flows.id.isin(used)]
        assert len(match), f"{truth_path.name}: no connection {conn['client']} -> {conn['server']}"
        cid = int(match.id.iloc[0])
        used.add(cid)
        for e, side in enumerate(("client", "server")):
            tl = timelines.get((cid, e), ([], []))
            kernel_times = [s["ts"] for s in samples if side in s]
            kernel_states = [s[side] for s in samples if side in s]
            changes = [t for t, a, b in zip(kernel_times[1:], kernel_states, kernel_states[1:])
                       if a != b] + tl[0]
            for s in samples:
                if s.get(side) in (None, "missed"):     # ss's dump missed the socket
                    continue
                ours = state_at(tl, s["ts"])
                if ours == s[side]:
                    agree += 1
                    total += 1
                    continue
                near = any(abs(t - s["ts"]) <= TOLERANCE_S +
                           (s.get("ts_after", s["ts"]) - s.get("ts_before", s["ts"]))
                           for t in changes)
                if near:
                    continue
                total += 1
                mismatches.append((truth_path.name, cid, side, round(s["ts"], 6), s[side], ours))
    return agree, total, mismatches


@pytest.mark.skipif(not TRUTHS, reason="sample_pcaps/ has no truth files")
def test_inferred_states_match_the_kernel():
    agree = total = 0
    mismatches = []
    per_capture = []
    for path in TRUTHS:
        a, t, m = compare(path)
        agree, total = agree + a, total + t
        mismatches += m
        per_capture.append(f"{path.name.removesuffix('.truth.json')}: {a}/{t}")
    rate = agree / total if total else 0.0
    print(f"\nss agreement: {agree}/{total} samples = {rate:.2%}")
    print("\n".join(per_capture))
    for m in mismatches[:40]:
        print("  mismatch", m)
    assert total > 0
    assert rate >= 0.98, f"only {rate:.2%} of ss samples agree"
