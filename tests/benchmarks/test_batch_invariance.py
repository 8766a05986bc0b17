"""The analysis does not depend on how the reader cuts the capture into batches (batch size,
Zeek live-table sweeps, table growth): a small synthetic capture read in batches of a few
hundred rows gives exactly what one read in default batches gives."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traceaudit.pipeline import ReadOptions, analyze_capture

HERE = Path(__file__).resolve().parent


def _make_synthetic():
    name = "make_synthetic"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "make_synthetic.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    out = tmp_path_factory.mktemp("invariance") / "small.pcap"
    # 2,000 connections in 20 s: many live at once, Zeek timers firing all along
    _make_synthetic().generate(out, connections=2000, seed=3, duration=20.0)
    return out


@pytest.mark.parametrize("batch_rows", [251, 4096])
def test_batch_size_changes_nothing(capture, batch_rows):
    ref = analyze_capture(capture)
    got = analyze_capture(capture, ReadOptions(batch_rows=batch_rows))
    assert ref.stats.packets == got.stats.packets > 50_000
    assert np.array_equal(ref.tracked.endpoints, got.tracked.endpoints)
    assert np.array_equal(ref.tracked.conns, got.tracked.conns)
    assert np.array_equal(ref.events, got.events)
    pd.testing.assert_frame_equal(ref.flows, got.flows)
    pd.testing.assert_frame_equal(ref.zeek_rows, got.zeek_rows)
