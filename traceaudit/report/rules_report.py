"""`traceaudit rules`: the rule catalogue as text (pure: registry in, text out)."""

from __future__ import annotations

import textwrap

from traceaudit.rules.config import RulesConfig
from traceaudit.rules.model import Rule

WIDTH = 92


def render_list(rules: dict[str, Rule], config: RulesConfig) -> str:
    active = {r.name for r in config.active_rules()}
    lines = [f"{'code':<6} {'rule':<27} {'severity':<8} title"]
    for rule in rules.values():
        mark = "" if rule.name in active else "  (not selected)"
        lines.append(f"{rule.code:<6} {rule.name:<27} {config.severity(rule).label:<8} "
                     f"{rule.title}{mark}")
    lines.append("")
    lines.append("`traceaudit rules NAME` (or CODE) explains one; thresholds are set under "
                 "[rules.NAME] in traceaudit.toml or with --set rules.NAME.KEY=VALUE "
                 "(NAME or CODE).")
    if config.source:
        lines.append(f"Settings from {config.source}.")
    return "\n".join(lines) + "\n"


def render_rule(rule: Rule, config: RulesConfig) -> str:
    params = config.params(rule)
    out = [f"{rule.code} {rule.name}: {rule.title}",
           f"default severity: {rule.severity.label}"
           + (f" (configured: {config.severity(rule).label})"
              if config.severity(rule) != rule.severity else ""), ""]
    out += _section("Why it matters", rule.rationale)
    out += _section("How to fix it", rule.remediation)
    if rule.thresholds:
        out.append("Thresholds:")
        for key, default in rule.thresholds.items():
            now = params[key]
            value = f"{now!r}" + (f" (default {default!r})" if now != default else "")
            out.append(f"  {key} = {value}")
            out += textwrap.wrap(rule.threshold_help.get(key, ""), WIDTH,
                                 initial_indent="      ", subsequent_indent="      ")
        out.append("")
    if rule.references:
        out.append("References:")
        out += [f"  - {ref}" for ref in rule.references]
    return "\n".join(out) + "\n"


def _section(title: str, text: str) -> list[str]:
    return [f"{title}:"] + textwrap.wrap(text, WIDTH, initial_indent="  ",
                                         subsequent_indent="  ") + [""]
