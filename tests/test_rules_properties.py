"""Property test: on random segment sequences every rule runs without error and every finding
points at frames that exist and at an endpoint of a real connection."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from test_tracker_properties import make_batch, segment
from traceaudit.capture import CaptureStats
from traceaudit.flows import FlowBuilder
from traceaudit.pipeline import CaptureAnalysis
from traceaudit.rules import run_rules
from traceaudit.rules.config import RulesConfig
from traceaudit.tracking.connections import add_tracking_columns
from traceaudit.tracking.timeline import corrected_events
from traceaudit.tracking.tracker import ConnectionTracker


@settings(max_examples=int(os.environ.get("TRACEAUDIT_PROPERTY_EXAMPLES", "200")),
          deadline=None, derandomize="TRACEAUDIT_PROPERTY_EXAMPLES" not in os.environ)
@given(st.lists(segment, min_size=1, max_size=40), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1))
def test_rules_never_fail_on_random_sequences(segments, isn_a, isn_b):
    batch = make_batch(segments, isn_a, isn_b)
    flows, tracker = FlowBuilder(initial=2), ConnectionTracker(initial=2)
    tracker.add(batch, flows.add(batch), flows)
    end = int(batch["ts_ns"].max())
    tracked = tracker.finish(flows.n_conns, end)
    events = corrected_events(tracked)
    table = add_tracking_columns(flows.table("random.pcap"), tracked, events)
    stats = CaptureStats(path="random.pcap", packets=len(batch), tcp_packets=len(batch),
                         first_ts_ns=int(batch["ts_ns"].min()), last_ts_ns=end)
    analysis = CaptureAnalysis(stats, table, tracked, events)
    config = RulesConfig()
    config.apply_set("rules.time-wait-pileup.min_sockets=1")
    for f in run_rules(analysis, config):
        assert f.frames and all(1 <= x <= len(batch) for x in f.frames), (f.rule, f.frames)
        assert f.endpoint in (None, "client", "server")
        assert f.connection is None or 0 <= f.connection < flows.n_conns
        assert f.message and f.fingerprint


def test_server_closes_first_summaries_merge_in_any_order():
    """The whole-capture summary of TA112 merges alike in either order (a flat read's chunks
    come in id order; a split by flow hash interleaves ids): the first connection and the
    examples are the lowest ids of both."""
    from copy import deepcopy

    from traceaudit.rules.server_closes_first import EXAMPLES, _merge
    low = {"total": {"10.0.0.1:80": 4}, "closing": {"10.0.0.1:80": [2, 3, [20, 50, 90], [2, 5, 9]]}}
    high = {"total": {"10.0.0.1:80": 3, "10.0.0.2:443": 1},
            "closing": {"10.0.0.1:80": [1, 2, [10, 70], [1, 7]],
                        "10.0.0.2:443": [4, 1, [40], [4]]}}
    one = _merge(deepcopy(low), deepcopy(high))
    other = _merge(deepcopy(high), deepcopy(low))
    assert one["total"] == other["total"] == {"10.0.0.1:80": 7, "10.0.0.2:443": 1}
    assert one["closing"] == other["closing"]
    first, n, frames, ids = one["closing"]["10.0.0.1:80"]
    assert (first, n) == (1, 5)
    assert ids == [1, 2, 5, 7, 9][:EXAMPLES] and frames == [10, 20, 50, 70, 90][:EXAMPLES]
