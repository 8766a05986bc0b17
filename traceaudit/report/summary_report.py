"""The terminal summary of `traceaudit analyze`: what a person reads in ten seconds.

Captures and totals, close roles and endings, findings by rule and severity, the worst
findings with their frames and a Wireshark display filter, and the verdict (exit code).
"""

from __future__ import annotations

import heapq
from collections import Counter
from datetime import datetime, timezone

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from traceaudit.audit import AuditReport
from traceaudit.names import display_name
from traceaudit.report import facts_text
from traceaudit.retire.findings import TOP_KEPT, rule_severities, worst_candidates
from traceaudit.rules.model import Finding, Severity

WORST_SHOWN = 5
assert 2 * WORST_SHOWN <= TOP_KEPT          # (a flat read keeps that many per chunk)
_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def render(report: AuditReport, console: Console) -> None:
    # a capture that could not be opened (missing, not a capture) was not analysed at all: it
    # is listed with its error, and counted apart from the captures read
    unread = [a for a in report.analyses if not a.read]
    analyses = [a for a in report.analyses if a.read]
    packets = sum(a.stats.packets for a in analyses)
    conns = sum(len(a.table) for a in analyses)
    files = sum(len(a.stats.parts) for a in analyses if a.stats.parts)
    joined = sum(1 for a in analyses if a.stats.parts)
    sets = f" ({files} files read as {joined} timeline(s))" if joined else ""
    head = (f"traceaudit {report.tool_version}: {len(analyses)} capture(s){sets}, "
            f"{packets:,} packets, {conns:,} TCP connections, "
            f"analysed in {report.elapsed_s:.1f} s")
    console.print(Text(head, style="bold")
                  + (Text(f"; {len(unread)} capture(s) not read", style="bold red")
                     if unread else Text("")))
    if report.config_source:
        console.print(Text(f"  settings: {display_name(report.config_source)}"),
                      highlight=False)
    for a in analyses:
        st = a.stats
        if len(analyses) > 10 and not st.parts:
            continue
        state = Text(f" damaged: {_error(st)}", style="red") if st.error else Text("")
        path = display_name(st.path)
        name = path if not st.parts else (f"{path} + {len(st.parts) - 1} file(s), one "
                                          f"timeline ({st.joined_by})")
        console.print(_hanging(Text(f"{name}: {st.packets:,} packets, {len(a.table):,} "
                                    f"connections{_span(st)}") + state, 2, 4))
        if st.parts:
            console.print(_hanging(Text(_timeline_files(st), style="dim"), 4, 6))
    for a in unread:
        console.print(_hanging(Text.assemble(f"{display_name(a.stats.path)}: ", ("not read", "bold red"),
                                             f": {_error(a.stats)}"), 2, 4))
    if report.skipped:
        n = len(report.skipped)
        shown = ", ".join(map(display_name, report.skipped[:3])) + (f" and {n - 3} more" if n > 3 else "")
        console.print(_hanging(Text(f"not captures, skipped ({n}): {shown}", style="dim"),
                               2, 4))
    roles: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for a in analyses:
        if len(a.table):
            roles.update(a.table.value_counts("close_role"))
            kinds.update(a.table.value_counts("close_kind"))
    if conns:
        console.print("closed first by: " + _counts(roles), highlight=False)
        console.print("endings:         " + _counts(kinds), highlight=False)
    _by_rule(report, console, len(analyses), len(unread))
    _worst(report, console)
    _verdict(report, console)


def _timeline_files(st) -> str:
    """A timeline's files in order, and how to get the capture its frame numbers are of."""
    from traceaudit.capture.chain import merge_command
    files = ", ".join(f"{display_name(p.path)} ({p.packets:,})" for p in st.parts)
    return (f"files (packets): {files}; frame numbers are those of the merged capture: "
            f"{display_name(merge_command(st))}")


def _error(st) -> str:
    """A capture's error without its path (the line names it already)."""
    text, name = str(st.error), display_name(st.path)
    return text[len(name):].lstrip(": ") if text.startswith(name) else text


class _Hanging:
    """``text`` indented by ``first`` columns and its wrapped lines by ``rest`` (rich itself
    would start them at column 0)."""

    def __init__(self, text: Text, first: int, rest: int) -> None:
        self.text, self.first, self.rest = text, first, rest

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(8, options.max_width - self.rest)
        for n, line in enumerate(self.text.wrap(console, width, overflow="fold")):
            line.end = "\n"
            yield Text(" " * (self.first if n == 0 else self.rest)) + line


def _hanging(text: Text, first: int, rest: int) -> _Hanging:
    return _Hanging(text, first, rest)


def _span(st) -> str:
    if st.first_ts_ns is None or st.last_ts_ns is None:
        return ""
    start = datetime.fromtimestamp(st.first_ts_ns / 1e9, timezone.utc)
    return f", {start:%Y-%m-%d %H:%M:%S} UTC + {(st.last_ts_ns - st.first_ts_ns) / 1e9:.1f} s"


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common())


def _by_rule(report: AuditReport, console: Console, read: int = 1, unread: int = 0) -> None:
    if not report.findings:
        if not read:
            console.print(Text("No capture could be read: nothing was analysed.",
                               style="bold red"))
        elif unread:
            console.print(Text(f"No findings in the {read} capture(s) read "
                               f"({len(report.rules)} rules ran; {unread} capture(s) not "
                               "read).", style="yellow"))
        else:
            console.print(Text(f"No findings ({len(report.rules)} rules ran).", style="green"))
        return
    counts: dict[str, Counter] = {}
    for (rule, severity), n in rule_severities(report.findings).items():
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
    shown = _worst_of(worst_candidates(report.findings))
    if not shown:
        return
    console.print(Text(f"Worst findings ({len(shown)} of {len(report.findings):,}):",
                       style="bold"))
    for f in shown:
        console.print(_hanging(_line(f), 0, 10))
        console.print(_hanging(Text(f.message), 4, 4))
        if f.details:
            console.print(_hanging(Text("; ".join(f"{k}: {v}" for k, v in
                                                  facts_text.facts(f.details))), 4, 4))
        frames = ", ".join(str(x) for x in f.frames[:8]) + (" …" if len(f.frames) > 8 else "")
        merged = " (on the merged capture)" if "frames_in_files" in f.details else ""
        console.print(_hanging(Text(f"frames {frames}   Wireshark{merged}: {f.display_filter}",
                                    style="dim"), 4, 4))


def _worst_of(findings: list[Finding]) -> list[Finding]:
    """The most severe findings, one per rule first (so one noisy rule does not hide the
    others), then the next most severe."""
    # in one pass, holding no more than that (a flat read's findings are read as they come):
    # each rule's first most severe, and the first most severe of all; ranked as a stable
    # sort of them all would rank them
    best: dict[str, tuple] = {}
    for i, f in enumerate(findings):
        key = (-f.severity, f.ts, i)
        if f.rule not in best or key < best[f.rule][0]:
            best[f.rule] = (key, f)
    top = heapq.nsmallest(2 * WORST_SHOWN, ((-f.severity, f.ts, i, f)
                                           for i, f in enumerate(findings)),
                          key=lambda t: t[:3])
    chosen = {id(f): (key, f) for key, f in best.values()}
    chosen.update({id(t[3]): (t[:3], t[3]) for t in top})
    ranked = [f for _, f in sorted(chosen.values(), key=lambda kf: kf[0])]
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
                         f"{f.rule}  {display_name(f.capture)}  {where}{who}")


def _verdict(report: AuditReport, console: Console) -> None:
    failing = report.failing
    extra = f"; {len(report.suppressed):,} suppressed by the baseline" if report.suppressed \
        else ""
    if report.unreadable:
        unread = sum(1 for a in report.unreadable if not a.read)
        damaged = len(report.unreadable) - unread
        what = [f"{unread} capture(s) could not be read"] if unread else []
        what += [f"{damaged} capture(s) could not be read to the end"] if damaged else []
        console.print(Text(f"{', '.join(what)} (see the errors above): exit 2{extra}",
                           style="bold red"))
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
