"""The terminal summary of `traceaudit analyze`: what a person reads in ten seconds.

Captures and totals, close roles and endings, findings by rule and severity, the worst
findings with their frames and a Wireshark display filter, and the verdict (exit code).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from operator import attrgetter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from traceaudit.audit import AuditReport
from traceaudit.rules.model import Finding, Severity

WORST_SHOWN = 5
_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def render(report: AuditReport, console: Console) -> None:
    analyses = report.analyses
    packets = sum(a.stats.packets for a in analyses)
    conns = sum(len(a.table) for a in analyses)
    console.print(Text(f"traceaudit {report.tool_version}: {len(analyses)} capture(s), "
                       f"{packets:,} packets, {conns:,} TCP connections, "
                       f"analysed in {report.elapsed_s:.1f} s", style="bold"))
    if report.config_source:
        console.print(Text(f"  settings: {report.config_source}"), highlight=False)
    if len(analyses) <= 10:
        for a in analyses:
            st = a.stats
            state = Text(" damaged", style="red") if st.error else Text("")
            console.print(Text(f"  {st.path}: {st.packets:,} packets, {len(a.table):,} "
                               f"connections{_span(st)}") + state, highlight=False)
    roles: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for a in analyses:
        if len(a.table):
            roles.update(a.table.value_counts("close_role"))
            kinds.update(a.table.value_counts("close_kind"))
    if conns:
        console.print("closed first by: " + _counts(roles), highlight=False)
        console.print("endings:         " + _counts(kinds), highlight=False)
    _by_rule(report, console)
    _worst(report, console)
    _verdict(report, console)


def _span(st) -> str:
    if st.first_ts_ns is None or st.last_ts_ns is None:
        return ""
    start = datetime.fromtimestamp(st.first_ts_ns / 1e9, timezone.utc)
    return f", {start:%Y-%m-%d %H:%M:%S} UTC + {(st.last_ts_ns - st.first_ts_ns) / 1e9:.1f} s"


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common())


def _by_rule(report: AuditReport, console: Console) -> None:
    if not report.findings:
        console.print(Text(f"No findings ({len(report.rules)} rules ran).", style="green"))
        return
    counts: dict[str, Counter] = {}
    findings = report.findings
    for (rule, severity), n in Counter(zip(map(attrgetter("rule"), findings),
                                           map(attrgetter("severity"), findings))).items():
        counts.setdefault(rule, Counter())[severity] = n
    table = Table(title="Findings by rule", title_justify="left", box=None, pad_edge=False)
    table.add_column("code")
    table.add_column("rule")
    for sev in (Severity.ERROR, Severity.WARNING, Severity.INFO):
        table.add_column(sev.label, justify="right", style=_STYLE[sev])
    for rule in report.rules:
        c = counts.get(rule.name)
        if c:
            table.add_row(rule.code, rule.name,
                          *(f"{c[s]:,}" if c[s] else "-" for s in
                            (Severity.ERROR, Severity.WARNING, Severity.INFO)))
    console.print(table)


def _worst(report: AuditReport, console: Console) -> None:
    shown = _worst_of(report.findings)
    if not shown:
        return
    console.print(Text(f"Worst findings ({len(shown)} of {len(report.findings):,}):",
                       style="bold"))
    for f in shown:
        console.print(_line(f), highlight=False)
        console.print(Text(f"    {f.message}"), highlight=False)
        frames = ", ".join(str(x) for x in f.frames[:8]) + (" …" if len(f.frames) > 8 else "")
        console.print(Text(f"    frames {frames}   Wireshark: {f.display_filter}",
                           style="dim"), highlight=False)


def _worst_of(findings: list[Finding]) -> list[Finding]:
    """The most severe findings, one per rule first (so one noisy rule does not hide the
    others), then the next most severe."""
    ranked = sorted(findings, key=lambda f: (-f.severity, f.ts))
    shown, rules = [], set()
    for f in ranked:
        if f.rule not in rules and len(shown) < WORST_SHOWN:
            shown.append(f)
            rules.add(f.rule)
    taken = {id(f) for f in shown}
    for f in ranked:
        if len(shown) >= WORST_SHOWN:
            break
        if id(f) not in taken:
            shown.append(f)
    return sorted(shown, key=lambda f: (-f.severity, f.ts))


def _line(f: Finding) -> Text:
    where = f"tcp.stream {f.connection}" if f.connection is not None else f"host {f.host}"
    who = f" ({f.endpoint})" if f.endpoint else ""
    return Text.assemble(("  " + f.severity.label.upper().ljust(8), _STYLE[f.severity]),
                         f"{f.rule}  {f.capture}  {where}{who}")


def _verdict(report: AuditReport, console: Console) -> None:
    failing = report.failing
    extra = f"; {len(report.suppressed):,} suppressed by the baseline" if report.suppressed \
        else ""
    if report.unreadable:
        console.print(Text(f"{len(report.unreadable)} capture(s) could not be read to the end "
                           f"(see the errors above): exit 2{extra}", style="bold red"))
    elif failing and report.accepted_by:
        console.print(Text(f"{len(failing):,} finding(s) at or above "
                           f"'{report.fail_on.label}', accepted by {report.accepted_by}: "
                           f"exit 0{extra}", style="bold yellow"))
    elif failing:
        console.print(Text(f"{len(failing):,} finding(s) at or above "
                           f"'{report.fail_on.label}': exit 1{extra}", style="bold red"))
    else:
        console.print(Text(f"No finding at or above '{report.fail_on.label}': exit 0{extra}",
                           style="bold green"))
