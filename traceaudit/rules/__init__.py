"""The rule registry: every module in this package that exports ``RULE`` is a rule.

``run_rules`` applies the selected rules, with their configured thresholds, to one capture.

The package is callable: ``traceaudit.rules()`` is the public ``traceaudit.api.rules`` (every
rule as a DataFrame), the name the Python API gives it (``docs/api.md``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import types
from functools import lru_cache
from typing import TYPE_CHECKING

from traceaudit.rules.model import Finding, Rule, Severity

if TYPE_CHECKING:
    from traceaudit.pipeline import CaptureAnalysis
    from traceaudit.rules.config import RulesConfig

__all__ = ["Finding", "Rule", "Severity", "registry", "run_rules"]

_NOT_RULES = {"model", "config", "evidence", "baseline", "common", "resets", "parts"}


@lru_cache(maxsize=1)
def registry() -> dict[str, Rule]:
    """All rules by name, in code order."""
    rules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_RULES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        rule = getattr(module, "RULE", None)
        if isinstance(rule, Rule):
            rules.append(rule)
    rules.sort(key=lambda r: r.code)
    names = [r.name for r in rules]
    codes = [r.code for r in rules]
    assert len(set(names)) == len(names) and len(set(codes)) == len(codes), "duplicate rule"
    return {r.name: r for r in rules}


def run_rules(analysis: "CaptureAnalysis", config: "RulesConfig") -> list[Finding]:
    """Findings of every selected rule for one capture, ordered by time then rule code."""
    from traceaudit.retire import flat
    if flat.is_flat(analysis):
        return flat.run_rules(analysis, config)      # (sorted and annotated, packed)
    try:
        findings = apply_rules(analysis, config)
    finally:
        # the rules' shared view refers to the analysis that holds it: a cycle that would keep
        # the whole analysis (tens of MB) until a garbage collection
        analysis.__dict__.pop("_rules_view", None)
    findings.sort(key=lambda f: (f.ts, f.code, f.connection if f.connection is not None else -1))
    if analysis.stats.parts:
        # a rotated set read as one timeline: say which file holds each (merged) frame
        from traceaudit.capture.chain import annotate
        annotate(findings, analysis.stats)
    return findings


def apply_rules(analysis: "CaptureAnalysis", config: "RulesConfig") -> list[Finding]:
    """Findings of every selected rule for one capture (or a chunk of a flat read), unsorted,
    each at its configured severity."""
    findings: list[Finding] = []
    for rule in config.active_rules():
        params = config.params(rule)
        severity = config.severity(rule)
        lowered = Severity(max(int(severity) - 1, 0))
        for finding in rule.check(analysis, params):
            # a verdict the capture supports only weakly is reported one level lower
            finding.severity = lowered if finding.details.get("confidence") == "low" \
                else severity
            findings.append(finding)
    return findings


class _CallableModule(types.ModuleType):
    """This package's module type: calling it lists the rules (``traceaudit.api.rules``)."""

    def __call__(self, *args, **kwargs):
        from traceaudit.api import rules
        return rules(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
