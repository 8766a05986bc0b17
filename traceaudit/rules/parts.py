"""The rules over a capture in parts: a flat read's chunks (``retire.flat``), or the shares of
a split by flow hash (``parallel.share_rules``).

A part's connections carry their ids in the whole capture. A rule that reads other
connections says what in its module's ``TOTALS`` (name -> (summarize, merge)): each part is
summarized, the summaries are merged into the whole capture's, and every part is then judged
with them (``judged``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from traceaudit.pipeline import CaptureAnalysis
    from traceaudit.rules.config import RulesConfig
    from traceaudit.rules.model import Finding

#: name -> (summarize(view, params), merge(a, b), params)
Summaries = dict[str, tuple[Callable, Callable[[Any, Any], Any], dict]]


def summaries_of(config: RulesConfig) -> Summaries | None:
    """The selected rules' whole-capture summaries; None if a rule does not say what it
    reads of other connections (no ``TOTALS``: it must see the whole capture at once)."""
    out: Summaries = {}
    for rule in config.active_rules():
        module = sys.modules[rule.check.__module__]
        if not hasattr(module, "TOTALS"):
            return None
        for name, (summarize, merge) in module.TOTALS.items():
            out[name] = (summarize, merge, config.params(rule))
    return out


def summarized(part: CaptureAnalysis, summaries: Summaries) -> dict:
    """Every summary of one part's connections."""
    from traceaudit.rules.common import View
    view = View(part)
    return {name: summarize(view, params) for name, (summarize, _, params) in summaries.items()}


def merged(totals: dict, part: dict, summaries: Summaries) -> dict:
    """``totals`` with one more part's summaries merged in (every merge gives the same in
    any order of the parts)."""
    for name, value in part.items():
        totals[name] = summaries[name][1](totals[name], value) if name in totals else value
    return totals


def judged(part: CaptureAnalysis, config: RulesConfig, totals: dict,
           final: bool) -> list[Finding]:
    """One part's findings with the whole capture's ``totals`` (``final``: the part that
    reports what is said once for the whole capture), sorted as ``run_rules`` sorts them."""
    from traceaudit.retire.findings import order
    from traceaudit.rules import apply_rules
    from traceaudit.rules.common import View
    part.__dict__["_rules_view"] = View(part, totals=totals, final=final)
    try:
        found = apply_rules(part, config)
    finally:
        del part.__dict__["_rules_view"]       # (a cycle: the part would wait for the GC)
    found.sort(key=order)
    return found
