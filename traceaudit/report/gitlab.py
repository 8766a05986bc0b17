"""GitLab Code Quality report (``artifacts:reports:codequality``): ``render(report) -> str``.

A JSON array with one issue per reported finding (baseline-suppressed findings are left out):
``description`` (code, rule, message, what it is about), ``check_name`` (the rule code),
``fingerprint`` (``Finding.fingerprint``; a repeat within the report gets one derived from it
and its occurrence number, as GitLab needs each issue's fingerprint to be unique),
``severity`` (info → ``info``, warning → ``major``, error → ``critical``), ``location.path``
(the capture, relative to the current directory when it lies below it) and
``location.lines.begin`` (the finding's first frame number; 1 when it names none). ``type``
and ``categories`` make each entry a valid Code Climate issue too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from traceaudit.audit import AuditReport
from traceaudit.names import display_name
from traceaudit.report.ci_common import (
    analyses_by_path,
    endpoints,
    first_frame_file,
    plain_json,
    shown_path,
    subject,
)
from traceaudit.rules.model import Severity

SEVERITIES = {Severity.INFO: "info", Severity.WARNING: "major", Severity.ERROR: "critical"}


def _location(f, analysis, cwd) -> dict:
    """The file (a rotated set: the piece holding the first frame) and that frame as the
    line."""
    path, frame = first_frame_file(f, analysis)
    return {"path": display_name(shown_path(path, cwd)), "lines": {"begin": frame or 1}}


def render(report: AuditReport, cwd: str | Path | None = None) -> str:
    by_path = analyses_by_path(report)
    ends = {path: endpoints(a) for path, a in by_path.items()}
    seen: dict[str, int] = {}
    issues: list[dict[str, Any]] = []
    for f in report.findings:
        fingerprint = f.fingerprint
        n = seen.get(fingerprint, 0)
        seen[fingerprint] = n + 1
        if n:
            fingerprint = hashlib.sha256(f"{fingerprint}\x1f{n}".encode()).hexdigest()[:24]
        issues.append({
            "type": "issue",
            "check_name": f.code,
            "description": f"{f.code} {f.rule}: {f.message} "
                           f"({subject(f, ends.get(f.capture, {}))})",
            "categories": ["Bug Risk"],
            "severity": SEVERITIES[f.severity],
            "fingerprint": fingerprint,
            "location": _location(f, by_path.get(f.capture), cwd),
        })
    return orjson.dumps(plain_json(issues), option=orjson.OPT_INDENT_2).decode() + "\n"
