"""The pytest plugin, run in pytest's own ``pytester``: the ``traceaudit_check`` fixture and
captures collected as test items fail with the findings' messages; unused, it costs nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib

import pytest

import traceaudit
from conftest import ROOT, SAMPLES

pytest_plugins = ["pytester"]

LEAK = SAMPLES / "close-wait-leak.pcap"            # TA101 (warning), TA102 (info)
CLEAN = SAMPLES / "half-close.pcap"                # no finding
PLUGIN = ("-p", "traceaudit.pytest_plugin")


@pytest.fixture(scope="module")
def warm():
    """The analysis' modules imported here first: pytester's in-process runs drop the modules
    they imported, and compiled ones (NumPy's, the core's) cannot be imported a second time."""
    from traceaudit.testing import failure_message
    audit = traceaudit.analyze(LEAK)
    failure_message(audit)


@pytest.fixture
def pt(pytester, monkeypatch, warm):
    """A pytester whose runs load only the plugin named (not whatever is installed)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    captures = pytester.path / "captures"
    captures.mkdir()
    shutil.copy(LEAK, captures / "login.pcap")
    shutil.copy(CLEAN, captures / "logout.pcap")
    return pytester


def test_the_fixture_fails_a_test_with_the_findings_messages(pt):
    pt.makepyfile(test_caps="""
        import traceaudit

        def test_clean(traceaudit_check):
            audit = traceaudit_check("captures/logout.pcap")
            assert isinstance(audit, traceaudit.Audit) and audit.exit_code == 0

        def test_leak(traceaudit_check):
            traceaudit_check("captures/login.pcap", select=["TA1"])

        def test_leak_not_selected(traceaudit_check):
            traceaudit_check(["captures/login.pcap"], select=["TA102"])

        def test_leak_below_fail_on(traceaudit_check):
            traceaudit_check("captures/login.pcap", fail_on="error")
    """)
    result = pt.runpytest(*PLUGIN)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([
        "*test_leak*",
        "traceaudit: 1 finding(s) at or above warning:",
        "  captures/login.pcap: connection 0 server: TA101 half-closed-leak (warning): server "
        "127.0.0.2:8080 received the client's FIN*frames 8, 9; filter: tcp.stream eq 0*",
    ])
    out = result.stdout.str()
    assert "Traceback" not in out and "During handling" not in out
    assert "TA102" not in out                                   # info: below fail_on


def test_the_marker_gives_the_fixture_default_options(pt):
    pt.makepyfile(test_marked="""
        import pytest

        @pytest.mark.traceaudit(fail_on="info", select="TA102")
        def test_info_fails(traceaudit_check):
            traceaudit_check("captures/login.pcap")

        @pytest.mark.traceaudit(fail_on="info", select="TA102")
        def test_call_wins(traceaudit_check):
            traceaudit_check("captures/login.pcap", fail_on="error")
    """)
    result = pt.runpytest(*PLUGIN)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*TA102 fin-wait-2-hang (info)*"])


def test_a_missing_capture_errors_the_test(pt):
    pt.makepyfile(test_missing="""
        import pytest
        import traceaudit

        def test_missing(traceaudit_check):
            with pytest.raises(FileNotFoundError, match="nowhere.pcap"):
                traceaudit_check("captures/nowhere.pcap")
            with pytest.raises(traceaudit.CaptureNotFoundError):
                traceaudit_check("captures/nowhere.pcap")
    """)
    pt.runpytest(*PLUGIN).assert_outcomes(passed=1)


def test_captures_under_the_ini_folder_become_test_items(pt):
    pt.makeini("""
        [pytest]
        traceaudit_captures = captures
    """)
    (pt.path / "captures" / "notes.txt").write_text("not a capture: not collected")
    (pt.path / "captures" / "bad.pcap").write_text("not a capture either, but named like one")
    (pt.path / "elsewhere.pcap").write_bytes(LEAK.read_bytes())    # outside: not collected
    result = pt.runpytest(*PLUGIN, "-v")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines_random([
        "captures/logout.pcap::traceaudit PASSED*",
        "captures/login.pcap::traceaudit FAILED*",
        "captures/bad.pcap::traceaudit FAILED*",
        "  captures/login.pcap: connection 0 server: TA101 half-closed-leak (warning)*",
        "*captures/bad.pcap at byte offset 0: not a pcap or pcapng file*",
    ])
    assert "elsewhere" not in result.stdout.str() and "notes.txt" not in result.stdout.str()
    # the items carry the traceaudit marker
    pt.runpytest(*PLUGIN, "-m", "not traceaudit").assert_outcomes()
    # the rules, the threshold severity and a settings file apply to the items
    pt.makeini("""
        [pytest]
        traceaudit_captures = captures
        traceaudit_select = TA102
        traceaudit_fail_on = info
    """)
    result = pt.runpytest(*PLUGIN, "-k", "login")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*TA102 fin-wait-2-hang (info)*"])
    assert "TA101" not in result.stdout.str()
    (pt.path / "traceaudit.toml").write_text('ignore = ["TA101"]\n')
    pt.makeini("""
        [pytest]
        traceaudit_captures = captures
    """)
    pt.runpytest(*PLUGIN, "-k", "login").assert_outcomes(passed=1)


def test_the_command_line_option_collects_a_folder_outside_the_arguments(pt):
    # (a plain directory, not a package: the outer session may hold a 'tests' package)
    unit = pt.mkdir("unit")
    (unit / "test_unit_one.py").write_text("def test_one():\n    pass\n")
    result = pt.runpytest(*PLUGIN, "unit", "--traceaudit-captures", "captures", "-v")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines_random(["unit/test_unit_one.py::test_one PASSED*",
                                        "captures/login.pcap::traceaudit FAILED*"])
    # named twice (as an argument too): each capture is still one item
    result = pt.runpytest(*PLUGIN, "captures", "--traceaudit-captures", "captures")
    result.assert_outcomes(passed=1, failed=1)


def test_unused_the_plugin_collects_nothing_and_imports_nothing_heavy(pt):
    pt.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pt.runpytest(*PLUGIN, "-v")
    result.assert_outcomes(passed=1)
    assert ".pcap" not in result.stdout.str()
    code = ("import sys, traceaudit.pytest_plugin; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pandas', 'numpy', 'pyarrow', 'traceaudit')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert eval(out) == ["traceaudit", "traceaudit.errors", "traceaudit.pytest_plugin"]


def test_the_plugin_is_declared_as_a_pytest11_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"traceaudit": "traceaudit.pytest_plugin"}
