"""SARIF 2.1.0 for code-scanning dashboards: ``render_sarif(report) -> bytes``.

One run. ``tool.driver.rules`` lists every rule that ran (id = code, name = kebab name,
level from the default severity, effective thresholds in ``properties``). Each finding is a
result located in its capture file (``artifactLocation.uri`` relative to the current
directory under ``%SRCROOT%`` when the file lies below it, else an absolute ``file:`` URI;
percent-encoded from the file name's bytes) with a logical location for the connection,
endpoint or host; frames, time and display filter are in ``properties``;
``partialFingerprints`` carries ``Finding.fingerprint``. Baseline-suppressed findings are
results too, with an external suppression and ``baselineState: unchanged``. A capture that
could not be read makes ``executionSuccessful`` false and adds an error notification
(reader warnings become warning notifications).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from traceaudit.audit import AuditReport
from traceaudit.names import display_name
from traceaudit.report.ci_common import (
    analyses_by_path,
    capture_files,
    capture_paths,
    endpoints,
    first_frame_file,
    iso_utc,
    plain_json,
    relative_below,
    subject,
    utf8_safe,
)
from traceaudit.rules.model import Finding, Rule, Severity

SCHEMA_URI = ("https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/"
              "sarif-schema-2.1.0.json")
FINGERPRINT_KEY = "traceaudit/v1"
LEVELS = {Severity.INFO: "note", Severity.WARNING: "warning", Severity.ERROR: "error"}
SRCROOT = "%SRCROOT%"


def render_sarif(report: AuditReport, cwd: str | Path | None = None) -> bytes:
    """The report as SARIF; relative URIs are resolved against ``cwd`` (default: the current
    directory)."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    paths = capture_paths(report)
    files = capture_files(report)           # (a rotated set: each of its pieces)
    by_path = analyses_by_path(report)
    locations = {p: _artifact_location(p, base) for p in files}
    for i, p in enumerate(files):
        locations[p]["index"] = i
    rule_index = {r.name: i for i, r in enumerate(report.rules)}
    ends = {p: endpoints(by_path.get(p)) for p in paths}
    results = [_result(f, rule_index, locations, ends, by_path.get(f.capture), suppressed=False)
               for f in report.findings]
    results += [_result(f, rule_index, locations, ends, by_path.get(f.capture), suppressed=True)
                for f in report.suppressed]
    pieces = {p.path: (a, k) for a in report.analyses for k, p in enumerate(a.stats.parts)}
    run: dict[str, Any] = {
        "tool": {"driver": _driver(report)},
        "invocations": [_invocation(report, locations)],
        "artifacts": [_artifact(p, by_path.get(p), locations[p], pieces.get(p))
                      for p in files],
        "results": results,
        "properties": {"failOn": report.fail_on.label, "elapsedSeconds": report.elapsed_s},
    }
    if report.config_source:
        run["properties"]["configFile"] = report.config_source
    if any(loc.get("uriBaseId") == SRCROOT for loc in locations.values()):
        run["originalUriBaseIds"] = {SRCROOT: {"uri": _file_uri(base, directory=True)}}
    log = {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}
    options = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
    try:
        return orjson.dumps(log, default=str, option=options)
    except orjson.JSONEncodeError:     # lone surrogates (undecodable bytes in a file name)
        return orjson.dumps(plain_json(log), default=lambda o: utf8_safe(o), option=options)


def _driver(report: AuditReport) -> dict:
    driver: dict[str, Any] = {"name": "traceaudit", "rules": [_descriptor(r, report)
                                                               for r in report.rules]}
    if report.tool_version:
        driver["version"] = report.tool_version
    return driver


def _descriptor(rule: Rule, report: AuditReport) -> dict:
    props: dict[str, Any] = {
        "thresholds": dict(report.params.get(rule.name, rule.thresholds)),
        "defaultThresholds": dict(rule.thresholds),
    }
    if rule.threshold_help:
        props["thresholdHelp"] = dict(rule.threshold_help)
    if rule.references:
        props["references"] = list(rule.references)
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.rationale},
        "help": {"text": rule.remediation},
        "defaultConfiguration": {"level": LEVELS[rule.severity]},
        "properties": props,
    }


def _result(f: Finding, rule_index: dict[str, int], locations: dict[str, dict],
            ends: dict[str, dict], analysis, suppressed: bool) -> dict:
    conn_ends = ends.get(f.capture, {})
    props: dict[str, Any] = {
        "rule": f.rule,
        "severity": f.severity.label,
        "timestamp": iso_utc(f.ts),
        "ts": f.ts,
        "frames": list(f.frames),
        "displayFilter": f.display_filter,
        "remediation": f.remediation,
    }
    for key in ("connection", "endpoint", "host"):
        if getattr(f, key) is not None:
            props[key] = getattr(f, key)
    if f.connection in conn_ends:
        props["client"], props["server"] = conn_ends[f.connection]
    if f.details:
        props["details"] = f.details
    path, frame = first_frame_file(f, analysis)
    if path != f.capture:           # a rotated set: the piece holding the first frame
        props["fileFrame"] = frame
    location = {"physicalLocation": {"artifactLocation": dict(locations[path])},
                "logicalLocations": [_logical(f, conn_ends)]}
    result: dict[str, Any] = {
        "ruleId": f.code,
        "level": LEVELS[f.severity],
        "message": {"text": f"{f.message} ({subject(f, conn_ends)})"},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT_KEY: f.fingerprint},
        "properties": props,
    }
    if f.rule in rule_index:
        result["ruleIndex"] = rule_index[f.rule]
    if suppressed:
        result["suppressions"] = [{"kind": "external", "status": "accepted",
                                   "justification": "matched the baseline"}]
        result["baselineState"] = "unchanged"
    return result


def _logical(f: Finding, conn_ends: dict[int, tuple[str, str]]) -> dict:
    if f.connection is not None:
        name = f"connection {f.connection}"
        fqn = name
        if f.connection in conn_ends:
            fqn += f" {conn_ends[f.connection][0]}->{conn_ends[f.connection][1]}"
        if f.endpoint:
            fqn += f" {f.endpoint}"
        return {"name": name, "fullyQualifiedName": fqn, "kind": "resource"}
    if f.host:
        return {"name": f.host, "fullyQualifiedName": f"host {f.host}", "kind": "resource"}
    return {"name": "capture", "kind": "resource"}


def _invocation(report: AuditReport, locations: dict[str, dict]) -> dict:
    notes = []
    for a in report.analyses:
        where = [{"physicalLocation": {"artifactLocation": dict(locations[a.stats.path])}}]
        for w in a.stats.warnings:
            notes.append({"level": "warning", "message": {"text": w}, "locations": where,
                          "descriptor": {"id": "reader-warning"}})
        if a.failed:
            slug = getattr(a.stats.error, "slug", "capture")
            notes.append({"level": "error", "message": {"text": str(a.stats.error)},
                          "locations": where, "descriptor": {"id": slug}})
    inv: dict[str, Any] = {"executionSuccessful": not report.unreadable}
    if notes:
        inv["toolExecutionNotifications"] = notes
    if report.generated_at:
        inv["endTimeUtc"] = report.generated_at
    return inv


def _artifact(path: str, analysis, location: dict, piece: tuple | None = None) -> dict:
    """A capture file; ``piece``: (timeline, position) when it is a piece of a rotated set
    read as one timeline (named by its first piece): its own counts, and on the first piece
    the timeline's connections."""
    art: dict[str, Any] = {"location": {k: v for k, v in location.items() if k != "index"},
                           "roles": ["analysisTarget"]}
    if piece is not None:
        timeline, k = piece
        p = timeline.stats.parts[k]
        art["properties"] = {"path": display_name(path), "format": p.format,
                             "readable": p.error is None, "packets": p.packets,
                             "tcpPackets": p.tcp_packets,
                             "timeline": display_name(timeline.stats.path), "piece": k + 1}
        if k == 0 and timeline.read:
            art["properties"]["timelineConnections"] = len(timeline.table)
        if os.path.isfile(path):
            art["length"] = os.path.getsize(path)
        return art
    if analysis is not None:
        st = analysis.stats
        art["properties"] = {"path": display_name(path), "format": st.format,
                             "readable": not analysis.failed}
        if analysis.read:
            art["properties"].update(packets=st.packets, tcpPackets=st.tcp_packets,
                                     connections=len(analysis.table))
        if os.path.isfile(path):
            art["length"] = os.path.getsize(path)
    return art


def _artifact_location(path: str, base: Path) -> dict:
    """Relative to ``base`` when the file lies below it (also through symbolic links), else
    an absolute ``file:`` URI."""
    rel = relative_below(path, base)
    if rel is None:
        return {"uri": _file_uri(Path(os.path.abspath(os.path.join(base, path))))}
    return {"uri": quote(os.fsencode(rel)), "uriBaseId": SRCROOT}


def _file_uri(path: Path, directory: bool = False) -> str:
    text = quote(os.fsencode(path.as_posix()))
    if directory and not text.endswith("/"):
        text += "/"
    return "file://" + text
