"""Shared by the CI reports (JUnit, SARIF): grouping, endpoint names, times, safe text."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from traceaudit.audit import AuditReport
from traceaudit.pipeline import CaptureAnalysis
from traceaudit.rules.model import Finding

# XML 1.0 forbids these (Char production); surrogates also cannot be encoded as UTF-8
# (a path decoded with surrogateescape carries them for undecodable bytes).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: object) -> str:
    """``text`` with every character XML 1.0 cannot carry replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", str(text))


def utf8_safe(text: object) -> str:
    """``text`` with lone surrogates (undecodable bytes) replaced by U+FFFD."""
    return re.sub("[\ud800-\udfff]", "\ufffd", str(text))


def iso_utc(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with microseconds, e.g. ``2024-05-01T12:00:00.250000Z``."""
    if not math.isfinite(ts):
        return "unknown time"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def capture_paths(report: AuditReport) -> list[str]:
    """Every capture in report order: the analysed ones, then any only findings name."""
    paths = [a.stats.path for a in report.analyses]
    seen = set(paths)
    for f in [*report.findings, *report.suppressed]:
        if f.capture not in seen:
            seen.add(f.capture)
            paths.append(f.capture)
    return paths


def analyses_by_path(report: AuditReport) -> dict[str, CaptureAnalysis]:
    return {a.stats.path: a for a in report.analyses}


def endpoints(analysis: CaptureAnalysis | None) -> dict[int, tuple[str, str]]:
    """Connection id → (client "ip:port", server "ip:port"), IPv6 addresses in brackets."""
    if analysis is None or not len(analysis.table):
        return {}
    cols = [analysis.table[c].tolist() for c in ("id", "client_ip", "client_port", "server_ip",
                                                 "server_port")]
    return {int(i): (_hostport(ci, cp), _hostport(si, sp)) for i, ci, cp, si, sp in zip(*cols)}


def _hostport(ip: object, port: object) -> str:
    ip = str(ip)
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def subject(f: Finding, ends: dict[int, tuple[str, str]]) -> str:
    """What the finding is about, in words: connection with its endpoints, or the host."""
    if f.connection is not None:
        text = f"connection {f.connection}"
        if f.connection in ends:
            client, server = ends[f.connection]
            text += f" ({client} -> {server})"
        if f.endpoint:
            text += f", {f.endpoint}"
            if f.connection in ends:
                text += f" {ends[f.connection][0 if f.endpoint == 'client' else 1]}"
        return text
    if f.host:
        return f"host {f.host}"
    return "capture"


def worst(findings: list[Finding]) -> Finding:
    """The most severe finding, the earliest among equals."""
    return min(findings, key=lambda f: (-int(f.severity), f.ts))
