"""Assertions for test suites: fail a test when recorded captures hold findings.

``check`` is ``traceaudit.analyze`` that raises ``AuditFailure`` (an ``AssertionError``)
listing the findings at or above ``fail_on``; it works under any test runner. pytest users get
it as the ``traceaudit_check`` fixture (``traceaudit.pytest_plugin``, ``docs/api.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from traceaudit.api import Audit, PathLike

#: At most this many findings are listed in a failure message (the rest are counted).
MAX_LISTED = 50


class AuditFailure(AssertionError):
    """Findings at or above ``fail_on`` (or captures that could not be read, with
    ``errors="collect"``); ``audit`` is the whole result."""

    def __init__(self, message: str, audit: Audit) -> None:
        super().__init__(message)
        self.audit = audit


def check(paths: PathLike | Iterable[PathLike], **options: Any) -> Audit:
    """Analyse ``paths`` (``traceaudit.analyze``'s arguments); raise ``AuditFailure`` with the
    findings' messages unless its ``exit_code`` is 0. Returns the ``Audit`` when it passes."""
    from traceaudit.api import analyze

    audit = analyze(paths, **options)
    if audit.exit_code != 0:
        raise AuditFailure(failure_message(audit), audit)
    return audit


def failure_message(audit: Audit, limit: int = MAX_LISTED, root: PathLike | None = None
                    ) -> str:
    """What failed an audit, one finding per line: capture (relative to ``root`` when it lies
    under it), connection and endpoint (or host), code, rule and severity, the message, its
    frames and Wireshark filter."""
    report = audit.report
    shown = _relative_to(root)
    failing = report.failing
    lines = []
    if failing:
        lines.append(f"traceaudit: {len(failing)} finding(s) at or above "
                     f"{report.fail_on.label}:")
    for f in failing[:limit]:
        subject = f"host {f.host}" if f.connection is None else \
            f"connection {f.connection}" + (f" {f.endpoint}" if f.endpoint else "")
        frames = ", ".join(map(str, f.frames[:8])) + (", ..." if len(f.frames) > 8 else "")
        evidence = "; ".join(x for x in (f"frames {frames}" if frames else "",
                                         f"filter: {f.display_filter}"
                                         if f.display_filter else "") if x)
        lines.append(f"  {shown(f.capture)}: {subject}: {f.code} {f.rule} ({f.severity.label}): "
                     f"{f.message}" + (f" [{evidence}]" if evidence else ""))
    if len(failing) > limit:
        lines.append(f"  ... and {len(failing) - limit} more")
    for error in audit.errors:
        lines.append(f"traceaudit: not read to its end: {error}")
    return "\n".join(lines)


def _relative_to(root: PathLike | None):
    """A function writing a path relative to ``root`` when it lies under it."""
    if root is None:
        return str
    from pathlib import Path
    base = Path(root).absolute()

    def shown(path: str) -> str:
        p = Path(path).absolute()
        return str(p.relative_to(base)) if p.is_relative_to(base) else path

    return shown
