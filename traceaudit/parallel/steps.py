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
    json_dir: str | None = None     # a JSON report is asked for: with several readers,
                                    # each capture's part of it is rendered into this
                                    # directory where it is read (``report.json_pieces``)
    render_json: bool = False       # do so (``with_several_readers``)
    crosses: bool = False           # what is kept may go to another process: a flat read
                                    # is made ``audit.portable`` (with --html it crosses
                                    # as it is, its files handed over)
    keep_findings: bool = True      # a report lists the findings; without, only their
                                    # counts and the worst few are kept for the summary
                                    # (``retire.findings.CountedFindings``)

    def __call__(self, analysis: CaptureAnalysis) -> tuple[CaptureAnalysis, list[Finding]]:
        from traceaudit.audit import portable, slimmed
        from traceaudit.rules import run_rules
        found = run_rules(analysis, self.config)
        if not self.keep_findings:
            from traceaudit.retire.findings import CountedFindings
            found = CountedFindings.of(found)
        text = None
        if self.render_json and self.json_dir:
            from traceaudit.report.json_pieces import rendered
            text = rendered(analysis, found, self.json_dir)
        if self.reads_flat_anywhere and not self.keep_excerpts:
            # every connection in memory only if the JSON report must still render them
            # (for --html, whose page is drawn from every capture's connections a chunk at
            # a time, a flat read crosses as it is: its files are handed over)
            analysis = portable(analysis, whole=self.keep_events and text is None)
        if text is None:
            return slimmed(analysis, keep_excerpts=self.keep_excerpts,
                           keep_events=self.keep_events, whole_table=self.keep_events), found
        # what is left for the reports is what the HTML report (if any) reads
        html = self.keep_excerpts
        return replace(slimmed(analysis, keep_excerpts=html, keep_events=html,
                               whole_table=html), json_text=text), found

    def with_several_readers(self) -> Audit:
        """This step where several readers run: each renders its captures' part of the JSON
        report (if one is asked for), so that they write its text side by side; what each
        keeps can cross to this process (a worker may read with flat memory)."""
        return replace(self, render_json=bool(self.json_dir), crosses=True)

    @property
    def reads_flat_anywhere(self) -> bool:
        """Whether a worker may read a capture with flat memory (``retire.flat``): what it
        keeps can cross back (``crosses``: the summary's columns and the JSON report's part,
        or for --html the flat read itself, its files handed over, ``retire.spill_files``)."""
        return self.crosses


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
