"""Config discovery upward from the current directory, config-relative paths, and capture
paths in JUnit/SARIF made relative to the current directory (CLI runs in tmp directories)."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from traceaudit.cli import main
from traceaudit.rules import config as cfg

# half-closed-leak (error), fin-wait-2-hang and keepalive-on-half-closed (warnings)
LEAK = SAMPLES / "keepalive-half-closed.pcap"


def run(*args):
    return CliRunner().invoke(main, ["analyze", *map(str, args)])


def rules_found(path):
    return {f["rule"] for f in json.loads(path.read_text())["findings"]}


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """tmp/top/mid/deep, the current directory being deep."""
    deep = tmp_path / "top" / "mid" / "deep"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    return tmp_path / "top", tmp_path / "top" / "mid", deep


def test_config_two_levels_up_is_found_and_named(tree, tmp_path):
    top, mid, deep = tree
    (top / "traceaudit.toml").write_text('select = ["fin-wait-2-hang"]\n')
    (mid / "pyproject.toml").write_text('[project]\nname = "x"\n')   # no [tool.traceaudit]
    out = tmp_path / "r.json"
    r = run(LEAK, "--json", out, "--junit", tmp_path / "j.xml", "--sarif", tmp_path / "s.sarif")
    assert r.exit_code == 1, r.output
    assert rules_found(out) == {"fin-wait-2-hang"}
    assert f"settings: {top / 'traceaudit.toml'}" in r.output
    props = {p.get("name"): p.get("value")
             for p in ET.parse(tmp_path / "j.xml").getroot().iter("property")}
    assert props["config"] == str(top / "traceaudit.toml")
    sarif = json.loads((tmp_path / "s.sarif").read_text())
    assert sarif["runs"][0]["properties"]["configFile"] == str(top / "traceaudit.toml")
    listing = CliRunner().invoke(main, ["rules"])
    assert f"Settings from {top / 'traceaudit.toml'}" in listing.output
    assert "half-closed-leak" in listing.output and "(not selected)" in listing.output


def test_nearest_directory_wins_and_pyproject_table_counts(tree, tmp_path):
    top, mid, deep = tree
    (top / "traceaudit.toml").write_text('select = ["fin-wait-2-hang"]\n')
    (mid / "pyproject.toml").write_text('[project]\nname = "x"\n\n'
                                        '[tool.traceaudit]\nselect = ["TA101"]\n')
    found = cfg.find_config(deep)
    assert found is not None and found[0] == mid / "pyproject.toml"
    out = tmp_path / "r.json"
    run(LEAK, "--json", out)
    assert rules_found(out) == {"half-closed-leak"}
    # in one directory traceaudit.toml comes before pyproject.toml
    (mid / "traceaudit.toml").write_text('select = ["keepalive-on-half-closed"]\n')
    run(LEAK, "--json", out)
    assert rules_found(out) == {"keepalive-on-half-closed"}
    # --config still overrides discovery
    other = tmp_path / "other.toml"
    other.write_text('select = ["fin-wait-2-hang"]\n')
    r = run(LEAK, "--config", other, "--json", out)
    assert rules_found(out) == {"fin-wait-2-hang"} and f"settings: {other}" in r.output


def test_no_config_anywhere_means_defaults(tree, tmp_path):
    assert cfg.load_config(None).source is None
    out = tmp_path / "r.json"
    r = run(LEAK, "--json", out)
    assert rules_found(out) == {"half-closed-leak", "fin-wait-2-hang",
                                "keepalive-on-half-closed"}
    assert "settings:" not in r.output


def test_baseline_is_relative_to_the_config_file(tree, tmp_path):
    top, mid, deep = tree
    (top / "ci").mkdir()
    assert run(LEAK, "--write-baseline", top / "ci" / "known.json").exit_code == 0
    (top / "traceaudit.toml").write_text('baseline = "ci/known.json"\n')
    r = run(LEAK, "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert "3 suppressed by the baseline" in r.output
    assert rules_found(tmp_path / "r.json") == set()
    # the same through --config FILE: relative to that file, not to the current directory
    r = run(LEAK, "--config", os.path.relpath(top / "traceaudit.toml"))
    assert r.exit_code == 0 and "suppressed by the baseline" in r.output, r.output
    # a missing one is named where it was looked for: beside the config file
    (top / "traceaudit.toml").write_text('baseline = "ci/gone.json"\n')
    r = run(LEAK)
    assert r.exit_code == 2 and f"{top / 'ci' / 'gone.json'}: baseline file not found" \
        in r.output
    # --baseline on the command line stays relative to the current directory
    r = run(LEAK, "--baseline", "ci/known.json")
    assert r.exit_code == 2 and str(deep / "ci" / "known.json") not in r.output
    assert "ci/known.json: baseline file not found" in r.output


def test_unreadable_pyproject_on_the_way_up_is_a_config_error(tree):
    top, mid, deep = tree
    (mid / "pyproject.toml").write_text("[tool.traceaudit\n")
    r = run(LEAK)
    assert r.exit_code == 2 and "cannot read config" in r.output


# -- capture paths in JUnit and SARIF -----------------------------------------------------------

def ci_names(tmp_path, capture):
    junit, sarif = tmp_path / "out" / "j.xml", tmp_path / "out" / "s.sarif"
    r = run(capture, "--junit", junit, "--sarif", sarif)
    assert r.exit_code == 1, r.output
    root = ET.parse(junit).getroot()
    suites = {s.get("name") for s in root.iter("testsuite")}
    classes = {c.get("classname") for c in root.iter("testcase")}
    doc = json.loads(sarif.read_text())
    uris = {(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
             r["locations"][0]["physicalLocation"]["artifactLocation"].get("uriBaseId"))
            for r in doc["runs"][0]["results"]}
    return suites, classes, uris


def test_absolute_capture_under_cwd_is_named_relative(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "caps").mkdir(parents=True)
    shutil.copy(LEAK, work / "caps" / "leak.pcap")
    monkeypatch.chdir(work)
    suites, classes, uris = ci_names(tmp_path, work / "caps" / "leak.pcap")
    assert suites == {"caps/leak.pcap"}
    assert classes == {"caps/leak_pcap"}
    assert uris == {("caps/leak.pcap", "%SRCROOT%")}


def test_capture_reached_through_a_symlink_is_still_relative(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "caps").mkdir(parents=True)
    shutil.copy(LEAK, work / "caps" / "leak.pcap")
    (tmp_path / "link").symlink_to(work, target_is_directory=True)
    monkeypatch.chdir(tmp_path / "link")         # os.getcwd() names work, the real directory
    suites, classes, uris = ci_names(tmp_path, tmp_path / "link" / "caps" / "leak.pcap")
    assert suites == {"caps/leak.pcap"}
    assert uris == {("caps/leak.pcap", "%SRCROOT%")}


def test_capture_outside_cwd_keeps_its_path(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    suites, classes, uris = ci_names(tmp_path, LEAK)
    assert suites == {str(LEAK)}
    assert classes == {str(LEAK).replace(".", "_")}
    ((uri, base),) = uris
    assert uri.startswith("file:///") and uri.endswith("/keepalive-half-closed.pcap")
    assert base is None
