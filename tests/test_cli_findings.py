"""`traceaudit analyze` for CI: exit codes, --fail-on, --select/--ignore, config files, --set,
baselines, and `traceaudit rules`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

import pytest
from click.testing import CliRunner

from conftest import SAMPLE_CAPTURES, SAMPLES
from traceaudit.cli import main

# half-closed-leak (error), fin-wait-2-hang and keepalive-on-half-closed (warnings)
LEAK = SAMPLES / "keepalive-half-closed.pcap"
NORMAL = SAMPLES / "normal-close-client.pcap"    # no findings
SIMUL = SAMPLES / "simultaneous-close.pcap"      # simultaneous-close (info) only


@contextlib.contextmanager
def fresh_directory(base):
    """The current directory is a new empty directory under ``base`` for the block (click's
    ``isolated_filesystem`` did this; deprecated in click 8.5)."""
    before = os.getcwd()
    os.chdir(tempfile.mkdtemp(dir=base))
    try:
        yield
    finally:
        os.chdir(before)


def run(*args, cwd=None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, ["analyze", *map(str, args)])
    with fresh_directory(cwd):
        return runner.invoke(main, ["analyze", *map(str, args)])


def findings(path):
    return json.loads(path.read_text())["findings"]


def test_exit_codes_follow_fail_on(tmp_path):
    assert run(NORMAL).exit_code == 0
    assert run(LEAK).exit_code == 1
    assert run(LEAK, "--fail-on", "error").exit_code == 1          # the leak is an error
    r = run(LEAK, "--fail-on", "error", "--ignore", "half-closed-leak")
    assert r.exit_code == 0, r.output                               # the others are warnings
    # the capture ends 43 ms into this CLOSE_WAIT: a low-confidence leak, one level lower
    assert run(SAMPLES / "close-wait-leak.pcap", "--fail-on", "error").exit_code == 0
    assert run(SIMUL).exit_code == 0                                # info is below warning
    assert run(SIMUL, "--fail-on", "info").exit_code == 1
    assert run(tmp_path / "missing.pcap").exit_code == 2
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    r = run(LEAK, bad)
    assert r.exit_code == 2 and "bad.pcap" in r.output              # reported, others analysed
    assert "half-closed-leak" in r.output


def test_select_and_ignore(tmp_path):
    out = tmp_path / "r.json"
    assert run(LEAK, "--select", "fin-wait-2-hang", "--json", out).exit_code == 1
    assert {f["rule"] for f in findings(out)} == {"fin-wait-2-hang"}
    run(LEAK, "--ignore", "fin-wait-2-hang,keepalive-on-half-closed", "--json", out)
    assert {f["rule"] for f in findings(out)} == {"half-closed-leak"}
    r = run(LEAK, "--select", "half-closed-leek")
    assert r.exit_code == 2 and "did you mean 'half-closed-leak'" in r.output


def test_set_overrides_thresholds_and_severity(tmp_path):
    out = tmp_path / "r.json"
    r = run(SAMPLES / "close-wait-leak-rst.pcap", "--json", out,
            "--set", "rules.half-closed-leak.min_duration=30")
    assert "half-closed-leak" not in {f["rule"] for f in findings(out)}
    run(LEAK, "--json", out, "--set", "rules.half-closed-leak.severity=info")
    assert {f["severity"] for f in findings(out) if f["rule"] == "half-closed-leak"} == {"info"}
    for bad in ("rules.half-closed-leak.min_duraton=3", "rules.nope.min_duration=3",
                "half-closed-leak.min_duration=3", "rules.half-closed-leak.min_duration=abc",
                "rules.half-closed-leak.severity=fatal"):
        r = run(LEAK, "--set", bad)
        assert r.exit_code == 2 and "error:" in r.output, bad


def test_config_from_traceaudit_toml_and_pyproject(tmp_path):
    leak = tmp_path / "leak.pcap"
    shutil.copy(LEAK, leak)
    (tmp_path / "traceaudit.toml").write_text(
        'fail-on = "error"\nignore = ["half-closed-leak"]\n')
    runner = CliRunner()
    with fresh_directory(tmp_path):
        shutil.copy(leak, "leak.pcap")
        shutil.copy(tmp_path / "traceaudit.toml", "traceaudit.toml")
        assert runner.invoke(main, ["analyze", "leak.pcap"]).exit_code == 0
        # the command line wins over the file
        assert runner.invoke(main, ["analyze", "leak.pcap", "--fail-on", "warning"]
                             ).exit_code == 1
    with fresh_directory(tmp_path):
        shutil.copy(leak, "leak.pcap")
        with open("pyproject.toml", "w") as fh:
            fh.write('[project]\nname = "x"\n\n[tool.traceaudit]\nselect = ["fin-wait-2-hang"]\n'
                     '[tool.traceaudit.rules.fin-wait-2-hang]\nseverity = "info"\n')
        r = runner.invoke(main, ["analyze", "leak.pcap", "--json", "o.json"])
        assert r.exit_code == 0, r.output
        assert [(f["rule"], f["severity"]) for f in json.load(open("o.json"))["findings"]] == \
            [("fin-wait-2-hang", "info")]
    broken = tmp_path / "broken.toml"
    broken.write_text("[rules.half-closed-leak]\nmin_duration = 'long'\n")
    r = run(LEAK, "--config", broken)
    assert r.exit_code == 2 and "broken.toml" in r.output and "expected a number" in r.output
    r = run(LEAK, "--config", tmp_path / "absent.toml")
    assert r.exit_code == 2 and "not found" in r.output


def test_baseline_suppresses_known_findings_only(tmp_path):
    base = tmp_path / "baseline.json"
    assert run(LEAK, "--write-baseline", base).exit_code == 0     # accepts today's findings
    doc = json.loads(base.read_text())
    assert doc["format"] == 1 and len(doc["findings"]) == 3
    out = tmp_path / "r.json"
    r = run(LEAK, "--baseline", base, "--json", out)
    assert r.exit_code == 0, r.output
    assert findings(out) == [] and "3 suppressed by the baseline" in r.output
    # a new ending in another capture still fails
    r = run(LEAK, SAMPLES / "unread-data-reset.pcap", "--baseline", base, "--json", out)
    assert r.exit_code == 1
    assert {f["rule"] for f in findings(out)} == {"unread-data-reset"}
    base.write_text("{}")
    r = run(LEAK, "--baseline", base)
    assert r.exit_code == 2 and "not a traceaudit baseline" in r.output


def test_terminal_summary_is_readable():
    r = run(SAMPLES)
    assert r.exit_code == 1
    text = r.output
    assert f"{len(SAMPLE_CAPTURES)} capture(s)" in text and "TCP connections" in text
    assert "closed first by:" in text and "endings:" in text
    assert "Findings by rule" in text and "TA101" in text and "half-closed-leak" in text
    assert "Worst findings" in text and "tcp.stream eq" in text
    assert "at or above 'warning': exit 1" in text


def test_rules_command_lists_and_explains():
    r = CliRunner().invoke(main, ["rules"])
    assert r.exit_code == 0
    assert "TA101" in r.output and "time-wait-pileup" in r.output
    r = CliRunner().invoke(main, ["rules", "time-wait-pileup"])
    assert r.exit_code == 0
    for part in ("Why it matters", "How to fix it", "min_sockets = 1000", "References"):
        assert part in r.output
    assert CliRunner().invoke(main, ["rules", "nope"]).exit_code == 2


@pytest.mark.parametrize("flag", ["--json", "--junit", "--sarif"])
def test_reports_are_written_atomically_or_not_at_all(tmp_path, flag):
    (tmp_path / "plain-file").write_text("x")
    target = tmp_path / "plain-file" / "r.out"               # its directory cannot exist
    r = run(LEAK, flag, target)
    assert r.exit_code == 2 and "cannot write" in r.output
    ok = tmp_path / "sub" / "r.out"                          # missing directories are made
    assert run(LEAK, flag, ok).exit_code == 1 and ok.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["plain-file", "r.out", "sub"]


def test_worst_findings_show_one_per_rule_first():
    text = run(SAMPLES).output
    worst = text[text.index("Worst findings"):].splitlines()[1:]
    rules = [ln.split()[1] for ln in worst if ln.startswith(("  ERROR", "  WARNING", "  INFO"))]
    assert len(rules) == 5 and len(set(rules)) == 5, rules
    assert rules[0] == "half-closed-leak"                  # the only error-level rule first
