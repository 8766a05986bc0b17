"""Rules named by code (TA101) or code prefix (TA1) wherever names are accepted, ruff-style
specificity between select and ignore, and `analyze --exit-zero` / `--write-baseline` exit 0."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from traceaudit.cli import main
from traceaudit.errors import UnknownRuleError
from traceaudit.rules import registry
from traceaudit.rules.config import RulesConfig, resolve_rule, resolve_selector

# half-closed-leak TA101 (error), fin-wait-2-hang TA102 and keepalive-on-half-closed TA113
LEAK = SAMPLES / "keepalive-half-closed.pcap"
SIMUL = SAMPLES / "simultaneous-close.pcap"      # simultaneous-close TA108 (info) only
LEAK_RST = SAMPLES / "close-wait-leak-rst.pcap"  # a half-closed-leak under 30 s


def run(*args):
    return CliRunner().invoke(main, ["analyze", *map(str, args)])


def rules_found(path):
    return {f["rule"] for f in json.loads(path.read_text())["findings"]}


def active(select, ignore=()):
    return [r.code for r in RulesConfig(select=select, ignore=list(ignore)).active_rules()]


ALL = [r.code for r in registry().values()]


# -- the resolver ------------------------------------------------------------------------------

def test_resolver_names_codes_and_prefixes():
    assert resolve_rule("TA101", "t").name == "half-closed-leak"
    assert resolve_rule("half-closed-leak", "t").code == "TA101"
    assert resolve_selector("TA11", "t").names == (
        "time-wait-reuse", "time-wait-pileup", "server-closes-first", "keepalive-on-half-closed",
        "middlebox-reset", "idle-timeout-reset")
    assert resolve_selector("TA101", "t").names == ("half-closed-leak",)
    assert resolve_selector("TA1", "t").specificity < resolve_selector("TA11", "t").specificity \
        < resolve_selector("TA101", "t").specificity == \
        resolve_selector("half-closed-leak", "t").specificity
    with pytest.raises(UnknownRuleError, match="'TA1' is a code prefix"):
        resolve_rule("TA1", "t")                 # one rule wanted: a prefix is not one
    for bad in ("TA2", "TA1014", "XX", "half-closed"):
        with pytest.raises(UnknownRuleError, match=repr(bad)):
            resolve_selector(bad, "t")


def test_specificity_between_select_and_ignore():
    assert ALL[0] == "TA101" and len(ALL) == 15
    assert active(["TA1"]) == ALL
    assert active(["TA1"], ["TA108"]) == [c for c in ALL if c != "TA108"]   # code over prefix
    assert active(["TA108"], ["TA1"]) == ["TA108"]                          # code over prefix
    assert active(["simultaneous-close"], ["TA1"]) == ["TA108"]             # name over prefix
    assert active(["TA11"], ["TA1"]) == ["TA110", "TA111", "TA112", "TA113", "TA114",
                                         "TA115"]                       # longer prefix
    assert active(["TA1"], ["TA11"]) == [c for c in ALL if not c.startswith("TA11")]
    assert active(["TA11"], ["TA11"]) == []                                 # ignore wins ties
    assert active(["TA108"], ["simultaneous-close"]) == []                  # (exact vs exact)
    assert active(None, ["TA10"]) == ["TA110", "TA111", "TA112", "TA113", "TA114",
                                      "TA115"]                          # default: all


# -- analyze --select/--ignore -----------------------------------------------------------------

def test_select_and_ignore_by_code_and_prefix(tmp_path):
    out = tmp_path / "r.json"
    assert run(LEAK, "--select", "TA102", "--json", out).exit_code == 1
    assert rules_found(out) == {"fin-wait-2-hang"}
    assert run(LEAK, "--ignore", "TA102,TA113", "--json", out).exit_code == 1
    assert rules_found(out) == {"half-closed-leak"}
    run(LEAK, "--select", "TA11", "--json", out)
    assert rules_found(out) == {"keepalive-on-half-closed"}
    run(LEAK, "--select", "TA10", "--select", "keepalive-on-half-closed", "--json", out)
    assert rules_found(out) == {"half-closed-leak", "fin-wait-2-hang", "keepalive-on-half-closed"}


def test_cli_specificity(tmp_path):
    out = tmp_path / "r.json"
    r = run(SIMUL, "--select", "TA1", "--ignore", "TA108", "--fail-on", "info", "--json", out)
    assert r.exit_code == 0, r.output
    assert rules_found(out) == set()
    r = run(SIMUL, "--select", "TA108", "--ignore", "TA1", "--fail-on", "info", "--json", out)
    assert r.exit_code == 1, r.output
    assert rules_found(out) == {"simultaneous-close"}


@pytest.mark.parametrize("args, name", [
    (("--select", "TA9"), "'TA9'"),
    (("--ignore", "TA1999"), "'TA1999'"),
    (("--select", "TA10,XX1"), "'XX1'"),
    (("--set", "rules.TA999.severity=info"), "'TA999'"),
    (("--set", "rules.TA1.severity=info"), "'TA1' is a code prefix"),
])
def test_unknown_codes_and_prefixes_are_usage_errors(args, name):
    r = run(LEAK, *args)
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and name in r.output


# -- config files and --set --------------------------------------------------------------------

def test_config_file_with_codes(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('select = ["TA1"]\nignore = ["TA101"]\n\n[rules.TA102]\nseverity = "info"\n')
    out = tmp_path / "r.json"
    r = run(LEAK, "--config", cfg, "--json", out)
    assert r.exit_code == 1, r.output                     # keepalive-on-half-closed: warning
    found = {(f["rule"], f["severity"]) for f in json.loads(out.read_text())["findings"]}
    assert found == {("fin-wait-2-hang", "info"), ("keepalive-on-half-closed", "warning")}
    # the command line's --select replaces the file's; its ignore still applies (exact > prefix)
    run(LEAK, "--config", cfg, "--select", "TA10", "--json", out)
    assert rules_found(out) == {"fin-wait-2-hang"}
    for text, name in (('ignore = ["TA7"]\n', "'TA7'"),
                       ('[rules.TA1]\nseverity = "info"\n', "'TA1'"),
                       ('[rules.TA404]\nseverity = "info"\n', "'TA404'")):
        cfg.write_text(text)
        r = run(LEAK, "--config", cfg)
        assert r.exit_code == 2 and name in r.output and "t.toml" in r.output, (text, r.output)


def test_set_by_code(tmp_path):
    out = tmp_path / "r.json"
    run(LEAK_RST, "--json", out)
    assert "half-closed-leak" in rules_found(out)
    run(LEAK_RST, "--json", out, "--set", "rules.TA101.min_duration=30")
    assert "half-closed-leak" not in rules_found(out)
    run(LEAK, "--json", out, "--set", "rules.TA101.severity=info")
    sev = {f["severity"] for f in json.loads(out.read_text())["findings"]
           if f["rule"] == "half-closed-leak"}
    assert sev == {"info"}
    r = run(LEAK, "--set", "rules.TA101.min_duraton=3")
    assert r.exit_code == 2 and "'half-closed-leak' has no setting 'min_duraton'" in r.output


def test_rules_command_by_code():
    by_code = CliRunner().invoke(main, ["rules", "TA101"])
    assert by_code.exit_code == 0
    assert by_code.output.startswith("TA101 half-closed-leak:")
    assert by_code.output == CliRunner().invoke(main, ["rules", "half-closed-leak"]).output
    for bad in ("TA42", "TA1"):
        r = CliRunner().invoke(main, ["rules", bad])
        assert r.exit_code == 2 and repr(bad) in r.output


def test_rules_list_marks_what_a_config_deselects(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('select = ["TA11"]\nignore = ["TA112"]\n')
    r = CliRunner().invoke(main, ["rules", "--config", str(cfg)])
    assert r.exit_code == 0
    selected = [ln.split()[0] for ln in r.output.splitlines()
                if ln.startswith("TA") and "(not selected)" not in ln]
    assert selected == ["TA110", "TA111", "TA113", "TA114", "TA115"]


# -- exit codes ---------------------------------------------------------------------------------

def test_exit_zero(tmp_path):
    assert run(LEAK).exit_code == 1
    r = run(LEAK, "--exit-zero")
    assert r.exit_code == 0, r.output
    assert "accepted by --exit-zero: exit 0" in r.output
    out = tmp_path / "r.json"
    assert run(LEAK, "--exit-zero", "--json", out).exit_code == 0
    assert rules_found(out) == {"half-closed-leak", "fin-wait-2-hang",
                                "keepalive-on-half-closed"}      # still reported
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    assert run(LEAK, bad, "--exit-zero").exit_code == 2            # unreadable input
    assert run(LEAK, "--exit-zero", "--select", "TA9").exit_code == 2   # configuration
    assert run(tmp_path / "missing.pcap", "--exit-zero").exit_code == 2
    help_text = CliRunner().invoke(main, ["analyze", "--help"]).output
    assert "--exit-zero" in help_text


def test_write_baseline_exits_zero(tmp_path):
    base = tmp_path / "baseline.json"
    r = run(LEAK, "--write-baseline", base)
    assert r.exit_code == 0, r.output
    assert "accepted by --write-baseline" in r.output
    assert len(json.loads(base.read_text())["findings"]) == 3
    assert run(LEAK, "--baseline", base).exit_code == 0
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    assert run(LEAK, bad, "--write-baseline", tmp_path / "b2.json").exit_code == 2
