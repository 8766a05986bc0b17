"""What a command keeps of each capture's analysis, as picklable objects: the step runs where
the capture was read (a worker process, a Dask worker) so that only what the reports need
crosses back to the client.

A step takes a ``CaptureAnalysis`` and returns ``(analysis, findings)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from traceaudit.pipeline import CaptureAnalysis
    from traceaudit.rules.config import RulesConfig
    from traceaudit.rules.model import Finding


class Step(Protocol):
    def __call__(self, analysis: CaptureAnalysis) -> tuple[CaptureAnalysis, list[Finding]]:
        ...


@dataclass(frozen=True)
class Audit:
    """``analyze``: the rules run, then only what the reports read is kept (``audit.slimmed``)."""

    config: RulesConfig
    keep_excerpts: bool         # the HTML report draws ladders from them
    keep_events: bool = True    # the timelines and the whole flow table: only the JSON and
                                # HTML reports read them (the largest tables a worker would
                                # otherwise send back); without, ``audit.SUMMARY_COLUMNS``

    def __call__(self, analysis: CaptureAnalysis) -> tuple[CaptureAnalysis, list[Finding]]:
        from traceaudit.audit import slimmed
        from traceaudit.rules import run_rules
        found = run_rules(analysis, self.config)
        return slimmed(analysis, keep_excerpts=self.keep_excerpts,
                       keep_events=self.keep_events, whole_table=self.keep_events), found


@dataclass(frozen=True)
class FlowsOnly:
    """``flows``: the flow table alone."""

    def __call__(self, analysis: CaptureAnalysis) -> tuple[CaptureAnalysis, list[Finding]]:
        from traceaudit.audit import slimmed
        return slimmed(analysis, keep_excerpts=False, keep_events=False), []


@dataclass(frozen=True)
class ZeekOnly:
    """``flows --format zeek``: Zeek's rows alone (the flow table goes too)."""

    def __call__(self, analysis: CaptureAnalysis) -> tuple[CaptureAnalysis, list[Finding]]:
        from traceaudit.audit import slimmed
        from traceaudit.flows.columns import Columns
        zeek = analysis.zeek_table
        return replace(slimmed(analysis, keep_excerpts=False, keep_events=False),
                       table=Columns({}, 0), zeek_table=zeek), []


@dataclass(frozen=True)
class RulesOnWhole:
    """The Python API: the rules run, the whole analysis kept (its DataFrames read every
    table: endpoints' facts, timelines, excerpts for ``to_html``)."""

    config: RulesConfig

    def __call__(self, analysis: CaptureAnalysis) -> tuple[CaptureAnalysis, list[Finding]]:
        from traceaudit.rules import run_rules
        return analysis, run_rules(analysis, self.config)
