"""Shared by the CI reports (JUnit, SARIF, annotations): grouping, endpoint names, times, safe
text, paths as CI shows them."""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def relative_below(path: str, base: str | Path) -> str | None:
    """``path`` relative to ``base`` (POSIX separators) when the file lies below ``base``,
    else None. Compared both as written and with symbolic links resolved (``/tmp`` may be a
    link; ``os.getcwd()`` never names one)."""
    joined = os.path.join(base, path)
    for resolve in (os.path.abspath, os.path.realpath):
        try:
            return Path(resolve(joined)).relative_to(resolve(base)).as_posix()
        except ValueError:
            continue
    return None


def shown_path(path: str, base: str | Path | None = None) -> str:
    """A capture's path as CI reports name it: an absolute path below ``base`` (default: the
    current directory) made relative to it; any other path as given."""
    if not os.path.isabs(path):
        return path
    rel = relative_below(path, base if base is not None else os.getcwd())
    return path if rel is None else rel


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
    if hasattr(analysis.table, "endpoint_texts"):     # a flat read: those findings name
        return analysis.table.endpoint_texts()
    cols = [analysis.table[c].tolist() for c in ("id", "client_ip", "client_port", "server_ip",
                                                 "server_port")]
    return {int(i): (hostport(ci, cp), hostport(si, sp)) for i, ci, cp, si, sp in zip(*cols)}


def first_frame_file(f: Finding, analysis: CaptureAnalysis | None) -> tuple[str, int | None]:
    """(file, frame number within it) of the finding's first frame: for a rotated set read as
    one timeline, the piece that holds it (its frames are numbered per file there, as
    Wireshark numbers them when the file is opened alone); else the capture and the frame.
    The frame is None when the finding names none."""
    frame = int(f.frames[0]) if f.frames else None
    parts = analysis.stats.parts if analysis is not None else None
    if not parts or frame is None:
        return f.capture, frame
    before = 0
    for part in parts:
        if frame <= before + part.packets:
            return part.path, frame - before
        before += part.packets
    return f.capture, frame


def capture_files(report: AuditReport) -> list[str]:
    """``capture_paths``, each timeline's pieces in place of it (its first piece's path)."""
    by_path = analyses_by_path(report)
    files = []
    for path in capture_paths(report):
        a = by_path.get(path)
        files.extend(p.path for p in a.stats.parts) if a is not None and a.stats.parts \
            else files.append(path)
    return list(dict.fromkeys(files))


def hostport(ip: object, port: object) -> str:
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


def plain_json(value: Any) -> Any:
    """Plain JSON values with every string valid UTF-8 (lone surrogates → U+FFFD)."""
    if isinstance(value, str):
        return utf8_safe(value)
    if isinstance(value, dict):
        return {utf8_safe(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if hasattr(value, "tolist"):
        return plain_json(value.tolist())   # numpy scalars and arrays in details or thresholds
    return value
