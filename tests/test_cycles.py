"""An analysis forms no reference cycle, so no garbage collection is needed between captures.

The command line turns automatic collection off (``cli.main``) and reads a batch without
collecting after each capture (``parallel.units.collect_if_failed``): a full collection cost
~0.08 s a 50,000-connection capture and grew with every analysis the batch keeps. That is
right only while an analysis's memory goes with the last reference to it; a cycle (the rules'
shared view once referred to the analysis that held it) would keep a whole capture's tables
until the end of the run. These tests read each sample capture the way every command does and
count what a collection finds afterwards: nothing.
"""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest

from conftest import SAMPLE_CAPTURES
from traceaudit.cli import FLAT_READ
from traceaudit.parallel.runner import in_process
from traceaudit.parallel.steps import Audit, FlowsOnly, RulesOnWhole, ZeekOnly
from traceaudit.pipeline import ReadOptions
from traceaudit.rules.config import make_config

CONFIG = make_config(None)
STEPS = {
    "analyze": (Audit(CONFIG, keep_excerpts=False, keep_events=False), ReadOptions()),
    "analyze --json --html": (Audit(CONFIG, keep_excerpts=True, keep_events=True),
                              ReadOptions(excerpts=True)),
    "analyze flat (spilled)": (Audit(CONFIG, keep_excerpts=True, keep_events=True),
                               ReadOptions(excerpts=True,
                                           retire=replace(FLAT_READ, min_bytes=0))),
    "flows": (FlowsOnly(), ReadOptions()),
    "flows --format zeek": (ZeekOnly(), ReadOptions()),
    "Python API": (RulesOnWhole(CONFIG), ReadOptions(excerpts=True)),
}


@pytest.fixture
def no_automatic_collection():
    was = gc.isenabled()
    gc.disable()
    gc.collect()
    yield
    if was:
        gc.enable()


def _unreachable_after(read) -> int:
    gc.collect()
    read()
    return gc.collect()


@pytest.mark.parametrize("name", STEPS)
def test_reading_every_sample_leaves_nothing_to_collect(name, no_automatic_collection):
    step, options = STEPS[name]
    assert SAMPLE_CAPTURES
    _unreachable_after(lambda: list(in_process(SAMPLE_CAPTURES[:3], options, step)))  # imports
    for capture in SAMPLE_CAPTURES:
        kept = []
        assert _unreachable_after(
            lambda: kept.extend(in_process([capture], options, step))) == 0, capture.name
        assert kept and kept[0].analysis.read
        # ... and dropping what was kept leaves nothing either
        assert _unreachable_after(kept.clear) == 0, capture.name


def test_the_rules_view_does_not_stay_on_the_analysis(no_automatic_collection):
    """The cycle that was: ``View.of`` caches itself on the analysis it refers to."""
    from traceaudit.pipeline import analyze_captures
    from traceaudit.rules import run_rules
    capture = next(c for c in SAMPLE_CAPTURES if "close-wait" in c.name)
    analysis = next(iter(analyze_captures([capture], ReadOptions())))
    assert run_rules(analysis, CONFIG)
    assert "_rules_view" not in analysis.__dict__
    del analysis
    assert gc.collect() == 0
