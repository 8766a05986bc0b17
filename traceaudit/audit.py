"""One audit run: the analyses of every capture, the findings, and the settings that made them.

Every report renderer (terminal, JSON, JUnit, SARIF, HTML) takes an ``AuditReport`` and never
reads a capture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from traceaudit.pipeline import CaptureAnalysis
from traceaudit.rules.model import Finding, Rule, Severity


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

    @property
    def failing(self) -> list[Finding]:
        """Findings at or above ``fail_on``: these make the exit code 1."""
        return [f for f in self.findings if f.severity >= self.fail_on]

    @property
    def unreadable(self) -> list[CaptureAnalysis]:
        return [a for a in self.analyses if a.failed]
