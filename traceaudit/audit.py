"""One audit run: the analyses of every capture, the findings, and the settings that made them.

Every report renderer (terminal, JSON, JUnit, SARIF, HTML) takes an ``AuditReport`` and never
reads a capture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterator

from traceaudit.pipeline import CaptureAnalysis
from traceaudit.rules.model import Finding, Rule, Severity

if TYPE_CHECKING:
    import numpy as np

    from traceaudit.rules.config import RulesConfig

#: Exit statuses of ``traceaudit analyze`` (``AuditReport.exit_code``): no finding at or above
#: fail_on (or they were accepted); findings at or above it; usage, configuration or a capture
#: that could not be read to its end.
EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


@dataclass
class AuditReport:
    analyses: list[CaptureAnalysis]
    findings: list[Finding]                      # reported: selected rules, not in the baseline
    rules: list[Rule]                            # the rules that ran
    params: dict[str, dict[str, Any]]            # effective thresholds per rule name
    fail_on: Severity = Severity.WARNING
    suppressed: list[Finding] = field(default_factory=list)   # matched the baseline
    tool_version: str = ""
    generated_at: str = ""                       # ISO 8601, UTC
    elapsed_s: float = 0.0
    accepted_by: str = ""            # "--exit-zero" or "--write-baseline": findings exit 0
    config_source: str = ""          # the settings file used ("" when none was found)
    skipped: list[str] = field(default_factory=list)   # files in the directories given that
                                                       # are not captures (not read, listed)

    @cached_property
    def failing(self) -> list[Finding]:
        """Findings at or above ``fail_on``: these make the exit code 1 unless ``accepted_by``
        (listed once: the summary and the exit code both ask; a flat read's packed findings
        are read as they are asked for)."""
        from traceaudit.retire.findings import AtOrAbove, FindingChain
        if isinstance(self.findings, FindingChain):
            return AtOrAbove(self.findings, self.fail_on)
        return [f for f in self.findings if f.severity >= self.fail_on]

    @property
    def unreadable(self) -> list[CaptureAnalysis]:
        return [a for a in self.analyses if a.failed]

    @property
    def exit_code(self) -> int:
        """``traceaudit analyze``'s exit status for this run: ``EXIT_ERROR`` when a capture
        could not be read to its end, else ``EXIT_FINDINGS`` when findings at or above
        ``fail_on`` were not accepted, else ``EXIT_CLEAN``."""
        if self.unreadable:
            return EXIT_ERROR
        return EXIT_FINDINGS if self.failing and not self.accepted_by else EXIT_CLEAN


def write_reports(report: AuditReport, *, json: str | None = None, junit: str | None = None,
                  sarif: str | None = None, html: str | None = None) -> None:
    """Every requested report (a path, or ``-`` for standard output), each written atomically
    (``report.output``); renderers never read captures."""
    from traceaudit.report.output import write_output
    if json:
        from traceaudit.report import json_report
        texts = _rendered_findings(report)
        json_report.write(json, report.analyses,
                          None if texts else (f.to_dict() for f in report.findings),
                          tool_version=report.tool_version, generated_at=report.generated_at,
                          skipped=report.skipped, finding_texts=texts)
    if junit:
        from traceaudit.report.junit import render_junit
        write_output(junit, render_junit(report))
    if sarif:
        from traceaudit.report.sarif import render_sarif
        write_output(sarif, render_sarif(report))
    if html:
        from traceaudit.report.html import render_html
        write_output(html, render_html(report))


def _rendered_findings(report: AuditReport) -> list[Iterator[bytes]] | None:
    """The findings' JSON text as the readers rendered it (``report.json_pieces``: each
    capture's, read once), when every capture's was and the report lists them all (no
    baseline took some out); else None (the report makes it from the findings)."""
    texts = [a.json_text for a in report.analyses]
    if not texts or any(t is None for t in texts) or \
            sum(t.finding_count for t in texts) != len(report.findings):
        return None
    return [t.finding_blocks() for t in texts]


def build_report(analyses: list[CaptureAnalysis], config: "RulesConfig",
                 known: set[str] | None = None, findings: list[Finding] | None = None,
                 **meta: Any) -> AuditReport:
    """Run the selected rules over every analysis (unless ``findings`` are given, already
    found) and apply the baseline (``known``)."""
    from traceaudit.rules import run_rules
    from traceaudit.rules.baseline import split_by_baseline

    if findings is None:
        findings = [f for a in analyses for f in run_rules(a, config)]
    suppressed: list[Finding] = []
    if known:
        findings, suppressed = split_by_baseline(findings, known)
    rules = config.active_rules()
    return AuditReport(analyses=analyses, findings=findings, rules=rules,
                       params={r.name: config.params(r) for r in rules},
                       fail_on=config.fail_on, suppressed=suppressed,
                       config_source=config.source or "", **meta)


def rst_origins(analysis: CaptureAnalysis) -> np.ndarray | None:
    """Who sent each endpoint's first RST ((connections, 2) ``ORIGIN_DTYPE``), from the
    tracker's facts, or as kept when they were dropped (None: no facts for every connection,
    e.g. a retiring read)."""
    from traceaudit.tracking.rst_origin import origin_table
    if analysis.rst_origins is not None:
        return analysis.rst_origins
    n = len(analysis.table)
    ends = analysis.tracked.endpoints
    return origin_table(ends[:n]) if len(ends) >= n else None


#: What the terminal summary and the CI reports (JUnit, SARIF, GitHub, GitLab, baselines) read
#: of the flow table: its length, how connections ended, and the endpoints of those findings
#: name (``report.ci_common.endpoints``)
SUMMARY_COLUMNS = ("id", "client_ip", "client_port", "server_ip", "server_port", "close_role",
                   "close_kind")


def slimmed(analysis: CaptureAnalysis, keep_excerpts: bool,
            keep_events: bool = True, whole_table: bool = True) -> CaptureAnalysis:
    """The analysis with what only the rules read dropped (tracker table, Zeek's own rows) and
    the packet excerpts dropped unless a report draws ladders from them; the timelines' events
    too unless ``keep_events`` (the flow table alone is all ``traceaudit flows`` writes). Unless
    ``whole_table``, only the flow table's ``SUMMARY_COLUMNS`` stay, and no RST origins (read
    by the JSON report alone): a batch keeps every capture's until its reports are written."""
    from dataclasses import replace

    import numpy as np

    from traceaudit.flows.columns import Columns
    from traceaudit.retire import flat
    from traceaudit.tracking.facts import conn_table, endpoint_table
    from traceaudit.tracking.tracker import Tracked

    if flat.is_flat(analysis):          # (read with nothing more than the reports need)
        return _flat_excerpts(flat.slimmed(analysis), keep_excerpts)
    t = analysis.tracked
    # fresh empty arrays: a [:0] view would keep the whole table it was cut from alive
    empty = Tracked(endpoint_table(0), conn_table(0), np.empty((0, 6), np.int64), t.end_ts_ns,
                    t.config)
    events = analysis.events if keep_events else np.empty((0, 6), np.int64)
    table = analysis.table
    if not whole_table and type(table) is Columns:
        table = Columns({name: table.column(name) for name in SUMMARY_COLUMNS if name in table},
                        len(table))
    return replace(analysis, tracked=empty, events=events, zeek_table=None,
                   excerpts=analysis.excerpts if keep_excerpts else None,
                   table=table, rst_origins=rst_origins(analysis) if whole_table else None)


def portable(analysis: CaptureAnalysis, whole: bool) -> CaptureAnalysis:
    """A flat read (``retire.flat``) as another process can receive it: its connections are
    in a temporary file of this one, which is closed. ``whole``: every connection's flow-table
    row and timeline in memory (as a keeping read has them; the JSON report renders from
    them); else only the ``SUMMARY_COLUMNS`` (~60 bytes a connection: the terminal summary
    and the CI reports), so a worker's memory stays flat. Any other analysis as it is."""
    from dataclasses import replace

    import numpy as np

    from traceaudit.flows.columns import Columns
    from traceaudit.retire import flat
    from traceaudit.retire.spill import concat_columns

    if not flat.is_flat(analysis):
        return analysis
    spill = analysis.table
    if whole:
        kept = flat.slimmed(analysis, in_memory=True)
    else:
        # (copies: a chunk's columns are views of its whole records, which they would keep)
        tables = [Columns({name: _copied(chunk.table.column(name)) for name in SUMMARY_COLUMNS},
                          len(chunk.table))
                  for chunk in flat.chunks(analysis, facts=False, zeek=False)]
        if not tables:
            empty = spill.columns()
            tables = [Columns({name: empty.column(name) for name in SUMMARY_COLUMNS}, 0)]
        kept = replace(analysis, table=concat_columns(tables),
                       events=np.empty((0, 6), np.int64), rst_origins=None)
        spill.close()
    return _flat_excerpts(replace(kept, zeek_table=None), keep=False)


def _copied(column):
    """A flow-table column (``flows.columns``) that holds no view of another array."""
    from traceaudit.flows.columns import Coded
    if isinstance(column, Coded):
        return Coded(column.codes.copy(), column.labels)
    copy = getattr(column, "copy", None)
    return copy() if copy is not None else column       # (a Repeated value: no array)


def _flat_excerpts(analysis: CaptureAnalysis, keep: bool) -> CaptureAnalysis:
    """A slimmed flat read's excerpts (``retire/excerpt_spill.py``): dropped unless kept; when
    its connections were brought back into memory, theirs too (in id order), so that no
    temporary file stays open for a small capture."""
    from dataclasses import replace

    from traceaudit.retire.excerpt_spill import SpilledExcerpts
    spilled = analysis.excerpts
    if not isinstance(spilled, SpilledExcerpts):
        return analysis
    if not keep:
        spilled.close()
        return replace(analysis, excerpts=None)
    if hasattr(analysis.table, "with_facts"):       # still on disk: read as the report asks
        return analysis
    excerpts = spilled.load(analysis.table["first_frame"].tolist())
    spilled.close()
    return replace(analysis, excerpts=excerpts)
