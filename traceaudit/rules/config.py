"""Rule selection and thresholds: defaults, then a config file, then ``--set``.

Config file (``traceaudit.toml``, or ``[tool.traceaudit]`` in ``pyproject.toml``; found in the
current directory or the nearest parent holding one, unless ``--config FILE`` names it)::

    select = ["half-closed-leak", "TA102"]   # names, codes or code prefixes ("TA1"); default: all
    ignore = ["simultaneous-close"]
    fail-on = "warning"                                # info | warning | error
    baseline = "traceaudit-baseline.json"              # relative to this file's directory

    [rules.half-closed-leak]     # or [rules.TA101]
    min_duration = 30          # a threshold (see `traceaudit rules`)
    severity = "error"         # override the rule's default severity

Wherever a rule is named (``--select``/``--ignore``, ``select``/``ignore``, ``[rules.X]``,
``--set rules.X.KEY=VALUE``, ``traceaudit rules X``) its name or its code is accepted; selection
also accepts a code prefix. ``resolve_selector`` and ``resolve_rule`` are the only places such
text becomes rules. As in ruff, when select and ignore both match a rule the more specific entry
wins (an exact code or name over a prefix, a longer prefix over a shorter one); ignore wins ties.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from traceaudit.errors import ConfigError, UnknownRuleError
from traceaudit.rules.model import Rule, Severity

CONFIG_FILE = "traceaudit.toml"
_TOP_KEYS = {"select", "ignore", "fail-on", "baseline", "rules"}


@dataclass
class RulesConfig:
    select: list[str] | None = None                    # None: every rule
    ignore: list[str] = field(default_factory=list)
    fail_on: Severity = Severity.WARNING
    baseline: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str | None = None                           # the file the settings came from

    # -- queries --------------------------------------------------------------------------
    def active_rules(self) -> list[Rule]:
        rules = _registry()
        if self.select is None:
            selected = {name: -1 for name in rules}        # everything, least specific of all
        else:
            selected = _best(self.select, "select")
        ignored = _best(self.ignore, "ignore")
        return [rule for name, rule in rules.items()
                if name in selected and selected[name] > ignored.get(name, -2)]

    def params(self, rule: Rule) -> dict[str, Any]:
        values = dict(rule.thresholds)
        values.update({k: v for k, v in self.overrides.get(rule.name, {}).items()
                       if k != "severity"})
        return values

    def severity(self, rule: Rule) -> Severity:
        text = self.overrides.get(rule.name, {}).get("severity")
        return Severity.parse(text) if text is not None else rule.severity

    # -- building -------------------------------------------------------------------------
    def apply_table(self, table: dict[str, Any], origin: str, base: Path | None = None) -> None:
        """Settings from one config table; a relative ``baseline`` is joined to ``base`` (the
        config file's directory)."""
        unknown = set(table) - _TOP_KEYS
        if unknown:
            raise ConfigError(f"{origin}: unknown setting(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(_TOP_KEYS))})")
        if "select" in table:
            self.select = check_rule_names(_str_list(table["select"], origin, "select"), origin)
        if "ignore" in table:
            self.ignore = check_rule_names(_str_list(table["ignore"], origin, "ignore"), origin)
        if "fail-on" in table:
            self.fail_on = _severity(table["fail-on"], f"{origin}: fail-on")
        if "baseline" in table:
            baseline = table["baseline"]
            if not isinstance(baseline, str) or not baseline:
                raise ConfigError(f"{origin}: baseline must be a file path")
            self.baseline = str(base / baseline) if base is not None else baseline
        rules = table.get("rules", {})
        if not isinstance(rules, dict):
            raise ConfigError(f"{origin}: [rules] must be a table of rule names")
        for name, settings in rules.items():
            if not isinstance(settings, dict):
                raise ConfigError(f"{origin}: [rules.{name}] must be a table")
            for key, value in settings.items():
                self.set_value(name, key, value, origin)

    def set_value(self, rule_ref: str, key: str, value: Any, origin: str) -> None:
        """One threshold or severity of one rule (named by its name or code)."""
        rule = resolve_rule(rule_ref, origin)
        rule_name = rule.name
        if key == "severity":
            _severity(value, f"{origin}: rules.{rule_name}.severity")
        elif key not in rule.thresholds:
            known = ", ".join(sorted(rule.thresholds)) or "none"
            raise ConfigError(f"{origin}: rule {rule_name!r} has no setting {key!r} "
                              f"(settings: {known}, severity)")
        else:
            value = _coerce(value, rule.thresholds[key], f"{origin}: rules.{rule_name}.{key}")
        self.overrides.setdefault(rule_name, {})[key] = value

    def apply_set(self, assignment: str) -> None:
        """One ``--set rules.NAME.KEY=VALUE``."""
        lhs, sep, rhs = assignment.partition("=")
        parts = lhs.strip().split(".")
        if not sep or len(parts) != 3 or parts[0] != "rules" or not all(parts):
            raise ConfigError(f"--set {assignment!r}: expected rules.NAME.KEY=VALUE "
                              "(NAME: a rule name or code)")
        self.set_value(parts[1], parts[2], _parse_value(rhs.strip()), "--set")


def load_config(path: str | None, cwd: Path | None = None) -> RulesConfig:
    """Settings from ``path``, else from the file ``find_config`` discovers from ``cwd``
    (default: the current directory) upward; defaults when there is none. Relative paths in
    the file (``baseline``) are taken relative to the file's directory."""
    config = RulesConfig()
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{path}: config file not found")
        doc = _read_toml(file)
        table = _tool_table(doc) if file.name == "pyproject.toml" else doc
        if table is None:
            raise ConfigError(f"{file}: no [tool.traceaudit] table")
    else:
        found = find_config(cwd or Path.cwd())
        if found is None:
            return config
        file, table = found
    config.source = str(file)
    config.apply_table(table, str(file), base=file.parent)
    return config


def make_config(path: str | Path | None = None, *, discover: bool = True,
                cwd: Path | None = None, select: list[str] | None = None,
                ignore: list[str] | None = None, fail_on: str | Severity | None = None,
                settings: Mapping[str, Mapping[str, Any]] | None = None,
                overrides: Iterable[str] = (), origin: str = "settings") -> RulesConfig:
    """One run's settings, in the command line's order: the settings file (``path``; else,
    when ``discover``, the one ``find_config`` finds from ``cwd``; else the defaults), then
    ``select`` (replaces the file's), ``ignore`` (added to the file's), ``fail_on``,
    ``settings`` (``{rule name or code: {threshold or "severity": value}}``, as ``[rules.X]``
    tables) and ``overrides`` (``--set rules.X.KEY=VALUE`` texts). ``select`` and ``ignore``
    are taken as checked (``check_rule_names``); ``origin`` names ``settings`` in errors."""
    config = load_config(str(path), cwd) if path is not None else \
        load_config(None, cwd) if discover else RulesConfig()
    if select is not None:
        config.select = list(select)
    config.ignore = config.ignore + list(ignore or [])
    if fail_on is not None:
        config.fail_on = fail_on if isinstance(fail_on, Severity) else \
            _severity(fail_on, "fail_on")
    if settings is not None:
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{origin}: expected {{rule: {{setting: value}}}}, "
                              f"got {type(settings).__name__}")
        for rule_ref, values in settings.items():
            if not isinstance(rule_ref, str):
                raise ConfigError(f"{origin}: rules are named by name or code, not {rule_ref!r}")
            if not isinstance(values, Mapping):
                raise ConfigError(f"{origin}[{rule_ref!r}]: expected {{setting: value}}, "
                                  f"got {values!r}")
            for key, value in values.items():
                config.set_value(rule_ref, key, value, origin)
    for item in overrides:
        config.apply_set(item)
    return config


def find_config(start: Path) -> tuple[Path, dict[str, Any]] | None:
    """The settings file for a run started in ``start``, with its settings table: in
    ``start`` and then each parent up to the filesystem root, the first directory holding
    ``traceaudit.toml`` (first) or a ``pyproject.toml`` with a ``[tool.traceaudit]`` table
    (a pyproject.toml without one is passed over, as ruff does)."""
    start = Path(start).absolute()
    for directory in (start, *start.parents):
        own = directory / CONFIG_FILE
        if own.is_file():
            return own, _read_toml(own)
        project = directory / "pyproject.toml"
        if project.is_file():
            table = _tool_table(_read_toml(project))
            if table is not None:
                return project, table
    return None


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read config: {exc}") from None


def _tool_table(doc: dict[str, Any]) -> dict[str, Any] | None:
    tool = doc.get("tool", {})
    table = tool.get("traceaudit") if isinstance(tool, dict) else None
    return table if isinstance(table, dict) else None


# -- naming rules -----------------------------------------------------------------------------

EXACT = 1_000      # the specificity of a rule's name or full code: above any prefix's length


@dataclass(frozen=True)
class Selector:
    """What one select/ignore entry means: the rules it matches, and how specifically."""

    text: str
    names: tuple[str, ...]          # matched rule names, in code order
    specificity: int                # EXACT for a name or code, else the prefix's length


def resolve_selector(text: str, origin: str) -> Selector:
    """A rule name, a rule code (``TA101``) or a code prefix (``TA1``: every rule whose code
    starts with it). Matching nothing is an ``UnknownRuleError`` naming the entry."""
    entry = text.strip()
    rules = _registry()
    if entry in rules:
        return Selector(entry, (entry,), EXACT)
    exact = [r.name for r in rules.values() if r.code == entry]
    if exact:
        return Selector(entry, tuple(exact), EXACT)
    by_prefix = [r.name for r in rules.values() if r.code.startswith(entry)] if entry else []
    if by_prefix:
        return Selector(entry, tuple(by_prefix), len(entry))
    raise UnknownRuleError(f"{origin}: unknown rule, code or code prefix {entry!r}"
                           f"{_suggest(entry)}")


def resolve_rule(text: str, origin: str) -> Rule:
    """Exactly one rule, by name or full code (a prefix of several codes is an error)."""
    found = resolve_selector(text, origin)
    if found.specificity != EXACT:
        raise UnknownRuleError(f"{origin}: {found.text!r} is a code prefix "
                               f"({', '.join(_registry()[n].code for n in found.names)}); "
                               "name one rule by its name or full code")
    return _registry()[found.names[0]]


def check_rule_names(names: Iterable[str], origin: str) -> list[str]:
    """Select/ignore entries, stripped, each checked to match at least one rule."""
    names = [n.strip() for n in names if n.strip()]
    for n in names:
        resolve_selector(n, origin)
    return names


def _best(entries: Iterable[str], origin: str) -> dict[str, int]:
    """For each rule some entry matches: the highest specificity among those entries."""
    best: dict[str, int] = {}
    for entry in entries:
        found = resolve_selector(entry, origin)
        for name in found.names:
            best[name] = max(best.get(name, -1), found.specificity)
    return best


def _registry() -> dict[str, Rule]:
    from traceaudit.rules import registry
    return registry()


def _suggest(name: str) -> str:
    import difflib
    rules = _registry()
    known = list(rules) + [r.code for r in rules.values()]
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else " (see `traceaudit rules`)"


def _str_list(value: Any, origin: str, key: str) -> list[str]:
    if isinstance(value, str):
        return value.split(",")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ConfigError(f"{origin}: {key} must be a list of rule names or codes")


def _severity(value: Any, where: str) -> Severity:
    try:
        return Severity.parse(str(value))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value!r}")
        return type(default)(value) if isinstance(default, float) or float(value).is_integer() \
            else value
    return value
