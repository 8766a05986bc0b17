"""Smaller points of issue 19: `states --at` outside the capture, unread captures in the
summary, wrapped finding lines, '-' in --help, and evidence facts written for people."""

from __future__ import annotations

import io
import json
import re

from click.testing import CliRunner
from rich.console import Console

import pcapgen as g
from conftest import SAMPLES
from traceaudit.audit import AuditReport
from traceaudit.capture import expand_paths
from traceaudit.cli import main
from traceaudit.pipeline import analyze_captures
from traceaudit.report import facts_text as FT
from traceaudit.report import html as H
from traceaudit.report import summary_report
from traceaudit.rules import run_rules
from traceaudit.rules.config import RulesConfig

LEAK = SAMPLES / "close-wait-leak-rst.pcap"


def audit(paths) -> AuditReport:
    cfg = RulesConfig()
    analyses = list(analyze_captures(expand_paths([str(p) for p in paths])))
    findings = [f for a in analyses for f in run_rules(a, cfg)]
    rules = cfg.active_rules()
    return AuditReport(analyses, findings, rules, {r.name: cfg.params(r) for r in rules},
                       tool_version="test", generated_at="2026-11-21T12:00:00Z", elapsed_s=1.0)


def closed_capture(tmp_path):
    a = g.Conversation().handshake().send("c", g.ACK | g.PSH, b"hi").send("s", g.ACK)
    a.close_by("c")
    p = tmp_path / "one.pcap"
    p.write_bytes(g.pcap_bytes(a.frames))
    return p, a


# -- 1. states --at outside the capture --------------------------------------------------------
def test_states_after_the_capture_says_so_and_expires_time_waits(tmp_path):
    p, a = closed_capture(tmp_path)
    last = a.frames[-1].ts_ns
    soon = last + 10 * 10**9
    r = CliRunner().invoke(main, ["states", str(p), "--at", f"{soon / 1e9:.6f}"])
    assert r.exit_code == 0, r.output
    assert "the capture ended at" in r.output and "10.0 s after its last packet" in r.output
    assert "TIME_WAIT  10.0.0.1:40000" in r.output       # 2×MSL (60 s) has not passed yet
    late = last + 100 * 10**9
    r = CliRunner().invoke(main, ["states", str(p), "--at", f"{late / 1e9:.6f}"])
    assert "1 min 40 s after its last packet" in r.output and "1 expired" in r.output
    assert "TIME_WAIT  " not in r.output                  # expired by then
    r = CliRunner().invoke(main, ["states", str(p), "--at", f"{late / 1e9:.6f}", "--all"])
    assert "CLOSED" in r.output
    # within the capture: no note
    r = CliRunner().invoke(main, ["states", str(p), "--at", "0.0001"])
    assert "note:" not in r.output


def test_states_before_the_capture_says_so(tmp_path):
    p, _ = closed_capture(tmp_path)
    r = CliRunner().invoke(main, ["states", str(p), "--at", "-2.5"])
    assert r.exit_code == 0, r.output
    assert "the capture began at" in r.output and "2.5 s before its first packet" in r.output


# -- 2. a capture that could not be read -------------------------------------------------------
def test_missing_capture_is_not_summarised_as_analysed(tmp_path):
    missing = tmp_path / "nope.pcap"
    r = CliRunner().invoke(main, ["analyze", str(missing)])
    assert r.exit_code == 2
    assert "not read: cannot open" in r.output
    assert "No findings" not in r.output and "0 connections" not in r.output
    assert "0 capture(s)" in r.output and "1 capture(s) not read" in r.output
    r = CliRunner().invoke(main, ["analyze", str(LEAK), str(missing)])
    assert r.exit_code == 2
    assert "1 capture(s), 11 packets" in r.output and "1 capture(s) not read" in r.output
    assert f"{missing}: not read" in r.output
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all, just some text")
    r = CliRunner().invoke(main, ["analyze", str(junk)])
    assert r.exit_code == 2 and "not read: at byte offset 0: not a pcap" in r.output
    assert "No capture could be read" in r.output and "No findings" not in r.output


def test_unread_capture_has_no_counts_in_json_junit_sarif(tmp_path):
    """A capture that could not be opened is not a capture of 0 packets whose rules passed."""
    import xml.etree.ElementTree as ET
    missing = tmp_path / "nope.pcap"
    out = {k: tmp_path / f"r.{k}" for k in ("json", "junit", "sarif")}
    r = CliRunner().invoke(main, ["analyze", str(LEAK), str(missing),
                                  *[a for k, p in out.items() for a in (f"--{k}", str(p))]])
    assert r.exit_code == 2
    caps = {c["path"]: c for c in json.loads(out["json"].read_text())["captures"]}
    gone, read = caps[str(missing)], caps[str(LEAK)]
    assert gone["read"] is False and "cannot open" in gone["error"]
    assert gone["packets"] is gone["tcp_packets"] is gone["connections"] is None
    assert read["read"] is True and read["packets"] == 11 and read["connections"] == 1
    suites = {s.find("properties/property[@name='capture']").get("value"): s
              for s in ET.parse(out["junit"]).getroot()}
    gone_suite, read_suite = suites[str(missing)], suites[str(LEAK)]
    cases = gone_suite.findall("testcase")
    assert cases[0].find("error") is not None
    assert all(c.find("skipped") is not None for c in cases[1:]) and len(cases) > 10
    assert gone_suite.get("skipped") == str(len(cases) - 1)
    props = {p.get("name") for p in gone_suite.iter("property")}
    assert "packets" not in props and "packets" in {p.get("name")
                                                   for p in read_suite.iter("property")}
    assert not any(c.find("skipped") is not None for c in read_suite.findall("testcase"))
    arts = json.loads(out["sarif"].read_text())["runs"][0]["artifacts"]
    props = {a["properties"]["path"]: a["properties"] for a in arts}
    assert props[str(missing)]["readable"] is False and "packets" not in props[str(missing)]
    assert props[str(LEAK)]["packets"] == 11


# -- 3. wrapped finding lines ------------------------------------------------------------------
def test_wrapped_finding_lines_are_indented():
    out = io.StringIO()
    summary_report.render(audit([LEAK]), Console(file=out, width=50, highlight=False,
                                                 color_system=None))
    worst = out.getvalue().split("Worst findings", 1)[1].splitlines()[1:]
    assert len(worst) > 12                                      # it did wrap
    for ln in worst:
        if ln.strip() and not ln.startswith("1 finding") and "exit" not in ln:
            assert ln.startswith("  "), repr(ln)
    heads = [ln for ln in worst if ln.startswith(("  ERROR", "  WARNING", "  INFO"))]
    assert len(heads) == 3
    body = [ln for ln in worst if ln.strip() and ln not in heads and "exit" not in ln]
    assert all(ln.startswith("    ") for ln in body), body
    assert all(len(ln.rstrip()) <= 50 for ln in worst)


# -- 4. '-' in --help --------------------------------------------------------------------------
def test_help_says_dash_is_standard_output():
    text = CliRunner().invoke(main, ["analyze", "--help"]).output
    entries = {m.group(1): re.sub(r"\s+", " ", m.group(2)) for m in
               re.finditer(r"^  (--[a-z-]+)(.*?)(?=^  -|\Z)", text, re.M | re.S)}
    for option in ("--json", "--junit", "--sarif", "--html", "--write-baseline"):
        assert "'-'" in entries[option] and "standard output" in entries[option], option


# -- 5. facts for people -----------------------------------------------------------------------
def test_fact_values_read_as_text():
    assert FT.duration(2.1e-05) == "21 µs"
    assert FT.duration(0.34) == "340 ms"
    assert FT.duration(4.0) == "4.0 s"
    assert FT.value("idle_s", 2.1e-05) == "21 µs" and FT.label("idle_s") == "idle"
    assert FT.value("still_open_at_capture_end", False) == "no"
    assert FT.value("x", True) == "yes"
    assert FT.value("port_range", [32768, 60999]) == "32768, 60999"
    assert str(FT.code_html("see `ss -tan` <now>")) == "see <code>ss -tan</code> &lt;now&gt;"


def test_terminal_and_html_facts_read_as_text_json_keeps_raw_values(tmp_path):
    report = audit([LEAK])
    out = io.StringIO()
    summary_report.render(report, Console(file=out, width=120, color_system=None))
    text = out.getvalue()
    assert "idle: 21 µs" in text and "still open at capture end: no" in text
    assert "e-05" not in text and "False" not in text
    page = H.render_html(report).decode()
    facts = "".join(re.findall(r'<dl class="facts">.*?</dl>', page, re.S))
    assert "<dt>idle</dt><dd>21 µs</dd>" in facts
    assert "<dd>no</dd>" in facts and "False" not in facts and "e-05" not in facts
    # rule texts: `ss -tan state close-wait` is code, not backticks
    assert "<code>ss -tan state close-wait</code>" in page
    assert "`ss -tan" not in page
    # the JSON report keeps raw numbers and booleans
    target = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["analyze", str(LEAK), "--json", str(target)])
    assert r.exit_code == 1
    leak = next(f for f in json.loads(target.read_text())["findings"]
                if f["rule"] == "half-closed-leak")
    assert leak["still_open_at_capture_end"] is False and isinstance(leak["idle_s"], float)


# -- 7. shell completion (documented in the README) --------------------------------------------
def complete(words: str, cword: int) -> list[str]:
    r = CliRunner().invoke(main, [], prog_name="traceaudit",
                           env={"_TRACEAUDIT_COMPLETE": "bash_complete",
                                "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert r.exit_code == 0, r.output
    return [line.split(",", 1)[1] for line in r.output.splitlines()]


def test_shell_completion_of_commands_options_and_rules():
    r = CliRunner().invoke(main, [], prog_name="traceaudit",
                           env={"_TRACEAUDIT_COMPLETE": "bash_source"})
    assert "complete -o nosort -F _traceaudit_completion traceaudit" in r.output
    assert complete("traceaudit an", 1) == ["analyze"]
    assert "--fail-on" in complete("traceaudit analyze --fai", 2)
    from traceaudit.rules import registry
    ta11 = sorted(r.code for r in registry().values() if r.code.startswith("TA11"))
    assert len(ta11) >= 4 and complete("traceaudit rules TA11", 2) == ta11
    # after a comma, the list so far is kept and the last entry completed
    assert complete("traceaudit analyze --select TA101,half-c", 3) == ["TA101,half-closed-leak"]
    assert "TA108" in complete("traceaudit analyze --ignore TA10", 3)
