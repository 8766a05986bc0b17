"""JSON Lines: ``render(report) -> str``, one reported finding per line.

Each line is the finding's entry of the JSON report (``Finding.to_dict``: rule, code,
severity, capture, connection, endpoint, ts, frames, message, remediation, display_filter,
fingerprint, details), so ``jq -c`` filters written for one work on the other.
Baseline-suppressed findings are left out.
"""

from __future__ import annotations

import orjson

from traceaudit.audit import AuditReport
from traceaudit.report.ci_common import plain_json

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def render(report: AuditReport) -> str:
    return "".join(_line(f.to_dict()) + "\n" for f in report.findings)


def _line(entry: dict) -> str:
    try:
        return orjson.dumps(entry, option=_OPTIONS).decode()
    except (orjson.JSONEncodeError, TypeError):     # lone surrogates, unusual detail values
        return orjson.dumps(plain_json(entry), default=str, option=_OPTIONS).decode()
