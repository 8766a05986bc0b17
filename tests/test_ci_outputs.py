"""JUnit XML and SARIF outputs: valid against the vendored schemas, and say the right things."""

from __future__ import annotations

import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote_to_bytes

import jsonschema
import numpy as np
import pandas as pd
import pytest
from lxml import etree
from rfc3986_validator import validate_rfc3986

from traceaudit.audit import AuditReport
from traceaudit.capture.source import CaptureStats
from traceaudit.errors import CaptureError
from traceaudit.pipeline import CaptureAnalysis
from traceaudit.report.junit import READ_TEST, render_junit
from traceaudit.report.sarif import FINGERPRINT_KEY, render_sarif
from traceaudit.rules.model import Finding, Rule, Severity

SCHEMAS = Path(__file__).parent / "data" / "schemas"
JUNIT_XSDS = {name: etree.XMLSchema(etree.parse(str(SCHEMAS / name)))
              for name in ("junit-10.xsd", "jenkins-junit.xsd")}
SARIF_SCHEMA = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
SARIF_VALIDATOR = jsonschema.Draft4Validator(
    SARIF_SCHEMA, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
T0 = 1_700_000_000.0


# -- builders ---------------------------------------------------------------------------------

def rule(name: str, code: str, severity: Severity = Severity.WARNING, **thresholds) -> Rule:
    return Rule(code=code, name=name, title=f"{name} title", severity=severity,
                rationale=f"why {name} matters", remediation=f"fix {name}",
                check=lambda analysis, params: [], thresholds=thresholds)


def analysis(path: str, conns=((0, "10.0.0.1", 5555, "10.0.0.2", 80),), packets: int = 10,
             error: str | None = None, warnings=()) -> CaptureAnalysis:
    stats = CaptureStats(path=path, format="pcap", packets=packets, tcp_packets=packets,
                         first_ts_ns=int(T0 * 1e9), last_ts_ns=int((T0 + 5) * 1e9),
                         warnings=list(warnings))
    if error is not None:
        stats.error = CaptureError(path, error, offset=1234)
    flows = pd.DataFrame(list(conns), columns=["id", "client_ip", "client_port", "server_ip",
                                               "server_port"])
    return CaptureAnalysis(stats=stats, table=flows, tracked=None, events=np.empty(0))


def finding(r: Rule, capture: str, severity: Severity | None = None, conn: int | None = 0,
            endpoint: str | None = "server", message: str = "server kept it open 42 s",
            frames=(3, 7), ts: float = T0 + 1.5, host: str | None = None) -> Finding:
    return Finding(rule=r.name, code=r.code, severity=severity or r.severity, capture=capture,
                   ts=ts, frames=list(frames), message=message, remediation=r.remediation,
                   connection=conn, endpoint=endpoint, host=host,
                   display_filter=f"tcp.stream eq {conn}" if conn is not None else "",
                   details={"cause": "test", "n": np.int64(3)},
                   key=f"{capture}:{conn}:{host}:{message}")


LEAK = rule("half-closed-leak", "TA101", Severity.WARNING, min_duration=30)
HANG = rule("fin-wait-2-hang", "TA102", Severity.ERROR)
NOTE = rule("simultaneous-close", "TA103", Severity.INFO)
RULES = [LEAK, HANG, NOTE]


def make_report(analyses, findings, suppressed=(), fail_on=Severity.WARNING,
                rules=RULES) -> AuditReport:
    return AuditReport(analyses=list(analyses), findings=list(findings), rules=list(rules),
                       params={r.name: {**r.thresholds} for r in rules}, fail_on=fail_on,
                       suppressed=list(suppressed), tool_version="0.1.0",
                       generated_at="2024-05-01T12:00:00Z", elapsed_s=1.25)


# -- validators -------------------------------------------------------------------------------

def junit_tree(data: bytes) -> ET.Element:
    """Parse strictly, validate against both Jenkins XSDs, return the stdlib tree."""
    doc = etree.fromstring(data, etree.XMLParser(recover=False, resolve_entities=False))
    for name, xsd in JUNIT_XSDS.items():
        assert xsd.validate(doc), f"{name}: {xsd.error_log}"
    return ET.fromstring(data)


def sarif_doc(data: bytes) -> dict:
    doc = json.loads(data)
    errors = sorted(SARIF_VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    for uri in _artifact_uris(doc):
        assert validate_rfc3986(uri, rule="URI_reference"), uri
    return doc


def _artifact_uris(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "artifactLocation":
                yield v["uri"]
            else:
                yield from _artifact_uris(v)
    elif isinstance(node, list):
        for v in node:
            yield from _artifact_uris(v)


def suite(root: ET.Element, path: str) -> ET.Element:
    (found,) = [s for s in root.iter("testsuite") if s.get("name") == path]
    return found


def case(s: ET.Element, name: str) -> ET.Element:
    (found,) = [c for c in s.iter("testcase") if c.get("name") == name]
    return found


def counts(el: ET.Element) -> tuple[int, ...]:
    return tuple(int(el.get(k, "0")) for k in ("tests", "failures", "errors", "skipped"))


# -- the schemas themselves -------------------------------------------------------------------

def test_vendored_schemas_match_recorded_hashes():
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    recorded = {name: digest for digest, name in
                re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, flags=re.MULTILINE)}
    assert set(recorded) == {"junit-10.xsd", "jenkins-junit.xsd", "sarif-schema-2.1.0.json"}
    for name, digest in recorded.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, name


def test_validators_reject_broken_documents():
    # Guards against vacuous validation: each schema must catch what it should.
    no_name = b'<testsuites><testsuite tests="1" failures="0" errors="0"/></testsuites>'
    for xsd in JUNIT_XSDS.values():
        assert not xsd.validate(etree.fromstring(no_name))
    out_of_order = (b'<testsuites><testsuite name="s" tests="1" failures="1" errors="0">'
                    b'<testcase name="c"><system-out>x</system-out><failure/></testcase>'
                    b'</testsuite></testsuites>')
    assert not JUNIT_XSDS["jenkins-junit.xsd"].validate(etree.fromstring(out_of_order))
    doc = json.loads(render_sarif(make_report([analysis("a.pcap")], [finding(LEAK, "a.pcap")])))
    assert SARIF_VALIDATOR.is_valid(doc)
    doc["runs"][0]["results"][0]["level"] = "fatal"
    assert not SARIF_VALIDATOR.is_valid(doc)
    doc["runs"][0]["results"][0]["level"] = "error"
    assert SARIF_VALIDATOR.is_valid(doc)
    doc["$schema"] = "https://a b/"
    assert not SARIF_VALIDATOR.is_valid(doc)        # the uri format is really checked
    assert not validate_rfc3986("caps/a b.pcap", rule="URI_reference")


# -- JUnit ------------------------------------------------------------------------------------

def test_junit_counts_and_contents():
    a, b = analysis("a.pcap", packets=30), analysis("b.pcap", packets=10)
    fs = [finding(LEAK, "a.pcap", frames=(3, 7)),
          finding(LEAK, "a.pcap", severity=Severity.ERROR, message="worst one", frames=(9,)),
          finding(NOTE, "a.pcap", endpoint="client", message="both sides closed at once")]
    root = junit_tree(render_junit(make_report([a, b], fs)))
    sa, sb = suite(root, "a.pcap"), suite(root, "b.pcap")
    # read test + one per rule; one (rule, capture) fails: the two leak findings
    assert counts(sa) == (4, 1, 0, 0)
    assert counts(sb) == (4, 0, 0, 0)
    assert counts(root)[:3] == (8, 1, 0)
    assert float(root.get("time")) == pytest.approx(sum(float(s.get("time")) for s in (sa, sb)))
    assert float(sa.get("time")) == pytest.approx(3 * float(sb.get("time")), abs=0.005)
    failure = case(sa, "half-closed-leak (TA101)").find("failure")
    assert failure.get("type") == "half-closed-leak"
    assert failure.get("message").startswith("2 findings at or above warning; worst: [error]")
    assert "worst one" in failure.get("message")
    text = failure.text
    assert "connection 0 (10.0.0.1:5555 -> 10.0.0.2:80), server 10.0.0.2:80" in text
    assert "frames: 3, 7" in text and "frames: 9" in text
    assert "time: 2023-11-14T22:13:21.500000Z" in text
    assert "display filter: tcp.stream eq 0" in text
    assert "remediation: fix half-closed-leak" in text
    assert fs[0].fingerprint in text
    # below fail-on: visible, not failing
    note = case(sa, "simultaneous-close (TA103)")
    assert note.find("failure") is None
    assert "both sides closed at once" in note.find("system-out").text
    assert "below fail-on (warning)" in note.find("system-out").text
    assert case(sa, "fin-wait-2-hang (TA102)").find("failure") is None
    assert case(sa, READ_TEST).find("error") is None
    props = {p.get("name"): p.get("value") for p in sa.iter("property")}
    assert props["capture"] == "a.pcap" and props["packets"] == "30"
    assert props["connections"] == "1" and props["fail_on"] == "warning"


@pytest.mark.parametrize("fail_on, failing_cases", [
    (Severity.INFO, {"half-closed-leak (TA101)", "fin-wait-2-hang (TA102)",
                     "simultaneous-close (TA103)"}),
    (Severity.WARNING, {"half-closed-leak (TA101)", "fin-wait-2-hang (TA102)"}),
    (Severity.ERROR, {"fin-wait-2-hang (TA102)"}),
])
def test_fail_on_moves_findings_between_failing_and_not(fail_on, failing_cases):
    fs = [finding(LEAK, "a.pcap"), finding(HANG, "a.pcap"), finding(NOTE, "a.pcap")]
    report = make_report([analysis("a.pcap")], fs, fail_on=fail_on)
    root = junit_tree(render_junit(report))
    failed = {c.get("name") for c in root.iter("testcase") if c.find("failure") is not None}
    assert failed == failing_cases
    assert counts(root)[1] == len(failing_cases) == len({f.rule for f in report.failing})
    for c in root.iter("testcase"):
        if c.get("name") not in failing_cases and c.get("name") != READ_TEST:
            assert fail_on.label in c.find("system-out").text   # still visible
    run = sarif_doc(render_sarif(report))["runs"][0]
    assert run["properties"]["failOn"] == fail_on.label
    assert [r["level"] for r in run["results"]] == ["warning", "error", "note"]


def test_unreadable_capture_is_an_error():
    bad = analysis("bad.pcap", error="truncated record header", packets=4,
                   warnings=["snaplen 0 in header"])
    good = analysis("good.pcap")
    fs = [finding(HANG, "bad.pcap")]     # what was read before the damage is still audited
    report = make_report([good, bad], fs)
    root = junit_tree(render_junit(report))
    sbad = suite(root, "bad.pcap")
    assert counts(sbad) == (4, 1, 1, 0) and counts(suite(root, "good.pcap")) == (4, 0, 0, 0)
    assert counts(root)[:3] == (8, 1, 1)
    error = case(sbad, READ_TEST).find("error")
    assert error.get("type") == "capture"
    assert "truncated record header" in error.get("message")
    assert "4 packets" in error.text and "snaplen 0 in header" in error.text
    assert "snaplen 0 in header" in sbad.find("system-out").text
    run = sarif_doc(render_sarif(report))["runs"][0]
    (inv,) = run["invocations"]
    assert inv["executionSuccessful"] is False
    errors = [n for n in inv["toolExecutionNotifications"] if n["level"] == "error"]
    warns = [n for n in inv["toolExecutionNotifications"] if n["level"] == "warning"]
    assert len(errors) == 1 and "truncated record header" in errors[0]["message"]["text"]
    assert [w["message"]["text"] for w in warns] == ["snaplen 0 in header"]
    loc = errors[0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert loc["uri"] == "bad.pcap" and run["artifacts"][loc["index"]]["properties"] == {
        "path": "bad.pcap", "format": "pcap", "packets": 4, "tcpPackets": 4,
        "connections": 1, "readable": False}
    ok = sarif_doc(render_sarif(make_report([good], [])))["runs"][0]["invocations"][0]
    assert ok["executionSuccessful"] is True and "toolExecutionNotifications" not in ok


NASTY = "dir/<script>&\"'\x01 x\udce9.pcap"     # markup, a control char, an undecodable byte


def test_escaping_round_trips_visible_text(tmp_path):
    message = "peer sent <RST> & \"quit\" 'now'\x07]]>"
    fs = [finding(LEAK, NASTY, message=message)]
    report = make_report([analysis(NASTY)], fs,
                         rules=[LEAK, rule("odd-<&>", "TA9\x02", Severity.WARNING)])
    data = render_junit(report)
    assert b"<script>" not in data and b"\x01" not in data and b"\x07" not in data
    root = junit_tree(data)
    visible = "dir/<script>&\"'\\x01 x\\xe9.pcap"   # names.display_name: as every report
    s = suite(root, visible)
    assert {p.get("name"): p.get("value") for p in s.iter("property")}["capture"] == visible
    failure = case(s, "half-closed-leak (TA101)").find("failure")
    assert "peer sent <RST> & \"quit\" 'now'\ufffd]]>" in failure.text
    assert "peer sent <RST> & \"quit\" 'now'\ufffd]]>" in failure.get("message")
    assert case(s, "odd-<&> (TA9\ufffd)") is not None

    raw = render_sarif(report, cwd=tmp_path)
    doc = sarif_doc(raw)
    (res,) = doc["runs"][0]["results"]
    loc = res["locations"][0]["physicalLocation"]["artifactLocation"]
    assert unquote_to_bytes(loc["uri"]) == os.fsencode(NASTY)     # the file's own bytes
    assert loc["uriBaseId"] == "%SRCROOT%"
    assert res["message"]["text"].startswith(message)             # JSON carries \x07 exactly
    props = doc["runs"][0]["artifacts"][0]["properties"]
    assert props["path"] == visible
    assert doc["runs"][0]["tool"]["driver"]["rules"][1]["id"] == "TA9\x02"


def test_suppressed_findings():
    kept = finding(LEAK, "a.pcap", conn=0)
    old = [finding(LEAK, "a.pcap", conn=1, message="known leak"),
           finding(NOTE, "a.pcap", conn=None, endpoint=None, host="10.0.0.9",
                   message="known host thing")]
    a = analysis("a.pcap", conns=[(0, "10.0.0.1", 5555, "10.0.0.2", 80),
                                  (1, "fe80::1", 4000, "fe80::2", 443)])
    report = make_report([a], [kept], suppressed=old)
    root = junit_tree(render_junit(report))
    s = suite(root, "a.pcap")
    assert counts(s) == (6, 1, 0, 2)
    base = case(s, "half-closed-leak (TA101) [baseline]")
    assert base.find("skipped").text == "1 finding suppressed by the baseline"
    assert base.find("failure") is None
    out = base.find("system-out").text
    assert "known leak" in out and "[fe80::1]:4000 -> [fe80::2]:443" in out
    assert old[0].fingerprint in out
    assert "known leak" not in case(s, "half-closed-leak (TA101)").find("failure").text
    assert "host 10.0.0.9" in case(s, "simultaneous-close (TA103) [baseline]").find(
        "system-out").text

    results = sarif_doc(render_sarif(report))["runs"][0]["results"]
    assert len(results) == 3
    assert "suppressions" not in results[0] and "baselineState" not in results[0]
    for r, f in zip(results[1:], old):
        assert r["suppressions"] == [{"kind": "external", "status": "accepted",
                                      "justification": "matched the baseline"}]
        assert r["baselineState"] == "unchanged"
        assert r["partialFingerprints"] == {FINGERPRINT_KEY: f.fingerprint}
    assert results[2]["locations"][0]["logicalLocations"] == [
        {"name": "10.0.0.9", "fullyQualifiedName": "host 10.0.0.9", "kind": "resource"}]


def test_sarif_rules_results_and_locations(tmp_path):
    cap = tmp_path / "caps" / "x.pcap"
    cap.parent.mkdir()
    cap.write_bytes(b"\0" * 24)
    path = str(cap)
    f = finding(HANG, path, endpoint="client", frames=(5, 6, 9))
    report = make_report([analysis(path)], [f])
    report.params[LEAK.name] = {"min_duration": 60}
    run = sarif_doc(render_sarif(report, cwd=tmp_path))["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "traceaudit" and driver["version"] == "0.1.0"
    rules = driver["rules"]
    assert [(r["id"], r["name"], r["defaultConfiguration"]["level"]) for r in rules] == [
        ("TA101", "half-closed-leak", "warning"), ("TA102", "fin-wait-2-hang", "error"),
        ("TA103", "simultaneous-close", "note")]
    assert rules[0]["shortDescription"]["text"] == "half-closed-leak title"
    assert rules[0]["fullDescription"]["text"] == "why half-closed-leak matters"
    assert rules[0]["help"]["text"] == "fix half-closed-leak"
    assert rules[0]["properties"]["thresholds"] == {"min_duration": 60}
    assert rules[0]["properties"]["defaultThresholds"] == {"min_duration": 30}
    (res,) = run["results"]
    assert rules[res["ruleIndex"]]["id"] == res["ruleId"] == "TA102"
    assert res["level"] == "error" and res["partialFingerprints"][FINGERPRINT_KEY] == f.fingerprint
    loc = res["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"] == {
        "uri": "caps/x.pcap", "uriBaseId": "%SRCROOT%", "index": 0}
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"
    assert loc["logicalLocations"] == [{
        "name": "connection 0", "kind": "resource",
        "fullyQualifiedName": "connection 0 10.0.0.1:5555->10.0.0.2:80 client"}]
    props = res["properties"]
    assert props["frames"] == [5, 6, 9] and props["displayFilter"] == "tcp.stream eq 0"
    assert props["timestamp"] == "2023-11-14T22:13:21.500000Z"
    assert props["client"] == "10.0.0.1:5555" and props["details"] == {"cause": "test", "n": 3}
    assert run["artifacts"][0]["length"] == 24
    # outside the current directory: an absolute file URI, no base
    elsewhere = render_sarif(report, cwd=tmp_path / "caps" / "sub")
    loc = sarif_doc(elsewhere)["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == cap.as_uri()
    assert "uriBaseId" not in loc["artifactLocation"]


def test_empty_report_is_valid():
    report = make_report([], [], rules=[])
    root = junit_tree(render_junit(report))
    assert counts(root)[:3] == (0, 0, 0) and root.find("testsuite") is None
    run = sarif_doc(render_sarif(report))["runs"][0]
    assert run["results"] == [] and run["tool"]["driver"]["rules"] == []
    assert run["invocations"][0]["executionSuccessful"] is True


# -- the real pipeline ------------------------------------------------------------------------

def test_real_pipeline_on_sample_captures(tmp_path):
    from tests.conftest import SAMPLE_CAPTURES
    from traceaudit.pipeline import analyze_capture
    from traceaudit.rules import registry, run_rules
    from traceaudit.rules.config import RulesConfig

    assert len(SAMPLE_CAPTURES) >= 20
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture" * 4)
    config = RulesConfig()
    analyses, findings = [], []
    for path in [*map(str, SAMPLE_CAPTURES), str(junk)]:
        a = analyze_capture(path)
        analyses.append(a)
        findings += run_rules(a, config)
    rules = config.active_rules()
    assert [r.name for r in rules] == list(registry())
    assert findings, "the sample captures are recorded to produce findings"
    suppressed = findings[::3]                 # as if a baseline held every third one
    reported = [f for f in findings if f not in suppressed]
    report = AuditReport(analyses=analyses, findings=reported, rules=rules,
                         params={r.name: config.params(r) for r in rules},
                         fail_on=config.fail_on, suppressed=suppressed, tool_version="test",
                         generated_at="2024-05-01T12:00:00Z", elapsed_s=0.5)
    assert [a.stats.path for a in report.unreadable] == [str(junk)]
    assert report.failing

    root = junit_tree(render_junit(report))
    assert len(root.findall("testsuite")) == len(analyses)
    baseline_cases = len({(f.capture, f.rule) for f in suppressed})
    assert counts(root)[:3] == (len(analyses) * (1 + len(rules)) + baseline_cases,
                                len({(f.capture, f.rule) for f in report.failing}), 1)
    # the junk file was not read: its rules did not run (skipped), they did not pass
    assert sum(int(s.get("skipped")) for s in root.iter("testsuite")) == (baseline_cases
                                                                         + len(rules))
    assert case(suite(root, str(junk)), READ_TEST).find("error") is not None
    failures = "".join(c.find("failure").text for c in root.iter("testcase")
                       if c.find("failure") is not None)
    outs = "".join(o.text for o in root.iter("system-out"))
    assert all(f.fingerprint in failures for f in report.failing)
    assert all(f.fingerprint in outs and f.fingerprint not in failures
               for f in [*suppressed, *(f for f in reported if f.severity < report.fail_on)])

    run = sarif_doc(render_sarif(report, cwd=SAMPLE_CAPTURES[0].parent.parent))["runs"][0]
    assert len(run["results"]) == len(findings)
    assert sum("suppressions" in r for r in run["results"]) == len(suppressed)
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [r.code for r in rules]
    assert {r["partialFingerprints"][FINGERPRINT_KEY] for r in run["results"]} == {
        f.fingerprint for f in findings}
    assert run["invocations"][0]["executionSuccessful"] is False
    uris = {a["location"]["uri"] for a in run["artifacts"]}
    assert "sample_pcaps/close-wait-leak.pcap" in uris and junk.as_uri() in uris


def test_finding_without_a_time_still_renders():
    f = finding(LEAK, "a.pcap", ts=float("nan"))
    report = make_report([analysis("a.pcap")], [f])
    failure = case(suite(junit_tree(render_junit(report)), "a.pcap"),
                   "half-closed-leak (TA101)").find("failure")
    assert "time: unknown time" in failure.text
    props = sarif_doc(render_sarif(report))["runs"][0]["results"][0]["properties"]
    assert props["timestamp"] == "unknown time" and props["ts"] is None
