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
