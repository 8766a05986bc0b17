"""JUnit XML for CI test reporters (Jenkins, GitLab, GitHub): ``render_junit(report) -> bytes``.

Layout: ``<testsuites>`` holds one ``<testsuite>`` per capture (name = the path relative to the
current directory when the capture lies below it, else as given; the ``capture`` property keeps
the path as given). Each
suite has

* ``capture is readable``: ``<error>`` (type = the error's slug) when the capture could not be
  read, or could only be read up to some damage (what was read is still audited below);
* one test case per rule that ran, named ``RULE-NAME (CODE)`` (*skipped* when nothing of the
  capture could be read: no rule ran on it): ``<failure>`` (type = rule
  name, message = count and the worst finding, text = every finding with connection,
  endpoints, frames, time, message, display filter and remediation) when the capture has
  findings of that rule at or above ``fail_on``; passed otherwise. Findings below ``fail_on``
  never fail: they are listed in the test case's ``<system-out>``;
* one *skipped* test case ``RULE-NAME (CODE) [baseline]`` per rule with baseline-suppressed
  findings: the skipped count in CI summaries shows the accepted debt, and ``<system-out>``
  lists the findings.

``classname`` is the capture path with dots replaced by ``_`` (Jenkins splits class names at
dots). Counts (tests, failures, errors, skipped) are those of the test cases. The analysis is
not timed per capture, so a suite's ``time`` is the run's ``elapsed_s`` shared out by packet
counts; ``<testsuites time>`` is their sum. Every value passes through ``xml_safe``: characters
XML 1.0 forbids (control characters, undecodable bytes in file names) become U+FFFD. Valid
against Jenkins' ``junit-10.xsd`` and the stricter dtkit ``junit-4.xsd`` (tests/data/schemas).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from traceaudit.audit import AuditReport
from traceaudit.names import display_name
from traceaudit.pipeline import CaptureAnalysis
from traceaudit.report.ci_common import (
    analyses_by_path,
    capture_paths,
    endpoints,
    iso_utc,
    shown_path,
    subject,
    worst,
    xml_safe,
)
from traceaudit.rules.model import Finding

READ_TEST = "capture is readable"


def render_junit(report: AuditReport, cwd: str | Path | None = None) -> bytes:
    """The report as a UTF-8 JUnit XML document (layout in the module docstring); captures
    below ``cwd`` (default: the current directory) are named relative to it."""
    paths = capture_paths(report)
    by_path = analyses_by_path(report)
    times = _suite_times(report, paths, by_path)
    rules = _rule_order(report)
    root = ET.Element("testsuites", name="traceaudit")
    reported, suppressed = _grouped(report.findings), _grouped(report.suppressed)
    totals = dict.fromkeys(("tests", "failures", "errors"), 0)
    for index, path in enumerate(paths):
        suite = _suite(report, index, path, by_path.get(path), rules, times[index],
                       reported.get(path, {}), suppressed.get(path, {}), cwd)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key))
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", str(totals["errors"]))
    root.set("time", f"{sum(times):.3f}")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _suite(report: AuditReport, index: int, path: str, analysis: CaptureAnalysis | None,
           rules: list[tuple[str, str]], time: float, reported: dict[str, list[Finding]],
           suppressed: dict[str, list[Finding]], cwd: str | Path | None) -> ET.Element:
    shown = display_name(shown_path(path, cwd))
    suite = ET.Element("testsuite", name=xml_safe(shown), id=str(index), time=f"{time:.3f}")
    if report.generated_at:
        suite.set("timestamp", xml_safe(report.generated_at))
    props = _properties(report, path, analysis)
    ET.SubElement(suite, "properties").extend(
        ET.Element("property", name=k, value=xml_safe(v)) for k, v in props)
    classname = xml_safe(shown).replace(".", "_")
    ends = endpoints(analysis)
    cases = []
    if analysis is not None:
        case = ET.Element("testcase", name=READ_TEST, classname=classname, time="0")
        if analysis.failed:
            err = analysis.stats.error
            ET.SubElement(case, "error", type=xml_safe(getattr(err, "slug", "capture")),
                          message=xml_safe(err)).text = xml_safe(_read_text(analysis))
        cases.append(case)
    for name, code in rules:
        case = _rule_case(report, name, code, classname, reported.get(name, []), ends)
        if analysis is not None and not analysis.read:
            # nothing was read: the rule did not pass, it did not run
            ET.SubElement(case, "skipped").text = "capture not read: the rule did not run"
        cases.append(case)
    for name, code in rules:
        if name in suppressed:
            cases.append(_baseline_case(name, code, classname, suppressed[name], ends))
    suite.extend(cases)
    warnings = analysis.stats.warnings if analysis is not None else []
    if warnings:
        ET.SubElement(suite, "system-out").text = xml_safe(
            "Reader warnings:\n" + "\n".join(f"  {w}" for w in warnings) + "\n")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
    suite.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
    return suite


def _rule_case(report: AuditReport, name: str, code: str, classname: str,
               findings: list[Finding], ends: dict) -> ET.Element:
    case = ET.Element("testcase", name=xml_safe(f"{name} ({code})"), classname=classname,
                      time="0")
    failing = [f for f in findings if f.severity >= report.fail_on]
    below = [f for f in findings if f.severity < report.fail_on]
    if failing:
        w = worst(failing)
        n = len(failing)
        message = (f"{n} finding{'s' if n != 1 else ''} at or above {report.fail_on.label}; "
                   f"worst: [{w.severity.label}] {subject(w, ends)}: {w.message}")
        ET.SubElement(case, "failure", type=xml_safe(name), message=xml_safe(message)).text = \
            xml_safe(_listing(failing, ends))
    if below:
        ET.SubElement(case, "system-out").text = xml_safe(
            f"{len(below)} finding(s) below fail-on ({report.fail_on.label}), not failing:\n\n"
            + _listing(below, ends))
    return case


def _baseline_case(name: str, code: str, classname: str, findings: list[Finding],
                   ends: dict) -> ET.Element:
    case = ET.Element("testcase", name=xml_safe(f"{name} ({code}) [baseline]"),
                      classname=classname, time="0")
    n = len(findings)
    ET.SubElement(case, "skipped").text = \
        f"{n} finding{'s' if n != 1 else ''} suppressed by the baseline"
    ET.SubElement(case, "system-out").text = xml_safe(
        "Suppressed by the baseline:\n\n" + _listing(findings, ends))
    return case


def _listing(findings: list[Finding], ends: dict) -> str:
    blocks = []
    for f in findings:
        lines = [f"[{f.severity.label}] {subject(f, ends)}",
                 f"  time: {iso_utc(f.ts)}   frames: {', '.join(map(str, f.frames)) or '-'}",
                 f"  {f.message}"]
        if f.display_filter:
            lines.append(f"  display filter: {f.display_filter}")
        if f.remediation:
            lines.append(f"  remediation: {f.remediation}")
        lines.append(f"  fingerprint: {f.fingerprint}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _read_text(a: CaptureAnalysis) -> str:
    st = a.stats
    text = (f"{st.error}\n{st.packets} packets ({st.tcp_packets} TCP) were read before the "
            f"problem; findings below cover only those.\n" if a.read else
            f"{st.error}\nNothing of it was read: no rule ran on it.\n")
    if st.warnings:
        text += "Reader warnings:\n" + "".join(f"  {w}\n" for w in st.warnings)
    return text


def _properties(report: AuditReport, path: str, a: CaptureAnalysis | None) -> list[tuple]:
    props = [("capture", display_name(path)), ("fail_on", report.fail_on.label)]
    if report.config_source:
        props.append(("config", report.config_source))
    if report.tool_version:
        props.append(("tool_version", report.tool_version))
    if a is not None:
        st = a.stats
        if a.read:
            props += [("format", st.format), ("packets", st.packets),
                      ("tcp_packets", st.tcp_packets), ("connections", len(a.table))]
        if st.first_ts_ns is not None and st.last_ts_ns is not None:
            props += [("first_packet", iso_utc(st.first_ts_ns / 1e9)),
                      ("last_packet", iso_utc(st.last_ts_ns / 1e9))]
        if st.error is not None:
            props.append(("error", str(st.error)))
        if st.parts:
            # a rotated set read as one timeline: its files, in order, and how to merge them
            from traceaudit.capture.chain import merge_command
            props += [("timeline", st.joined_by)]
            props += [(f"timeline_file_{i}", f"{p.path} ({p.packets} packets)")
                      for i, p in enumerate(st.parts, 1)]
            props.append(("merged_capture", merge_command(st)))
    return props


def _grouped(findings: list[Finding]) -> dict[str, dict[str, list[Finding]]]:
    """Capture path → rule name → findings, in report order."""
    out: dict[str, dict[str, list[Finding]]] = defaultdict(lambda: defaultdict(list))
    for f in findings:
        out[f.capture][f.rule].append(f)
    return out


def _rule_order(report: AuditReport) -> list[tuple[str, str]]:
    """(name, code) of every rule that ran, then of any rule only findings mention."""
    order = [(r.name, r.code) for r in report.rules]
    known = {n for n, _ in order}
    extra = {(f.rule, f.code) for f in [*report.findings, *report.suppressed]
             if f.rule not in known}
    return order + sorted(extra, key=lambda nc: (nc[1], nc[0]))


def _suite_times(report: AuditReport, paths: list[str],
                 by_path: dict[str, CaptureAnalysis]) -> list[float]:
    weights = [by_path[p].stats.packets if p in by_path else 0 for p in paths]
    total = sum(weights)
    if not paths:
        return []
    if total == 0:
        weights, total = [1] * len(paths), len(paths)
    return [round(report.elapsed_s * w / total, 3) for w in weights]
