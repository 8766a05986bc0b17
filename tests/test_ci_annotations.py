"""--output-format github | gitlab | json-lines: the renderers' shapes and escaping, and the
CLI writing them to standard output or -o FILE."""

from __future__ import annotations

import json
import re
import shutil

from click.testing import CliRunner

from conftest import SAMPLES
from test_ci_outputs import HANG, LEAK, NOTE, analysis, finding, make_report
from traceaudit.cli import main
from traceaudit.report import github, gitlab, json_lines

# one annotation: the command, properties with no raw ',' ':' CR LF, then the message on one line
GITHUB_LINE = re.compile(r"^::(error|warning|notice) file=([^,:\r\n]+)(?:,line=(\d+))?"
                         r",title=([^,:\r\n]+)::([^\r\n]*)$")
GITLAB_SEVERITIES = {"info", "minor", "major", "critical", "blocker"}
NASTY_MESSAGE = "100% stuck:\r\nsecond line, with: colons"
NASTY_PATH = "dir,one/a:b%c.pcap"


def unescape(text: str, prop: bool = False) -> str:
    if prop:
        text = text.replace("%3A", ":").replace("%2C", ",")
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def sample_report():
    fs = [finding(LEAK, "a.pcap", message=NASTY_MESSAGE, frames=(11, 12)),
          finding(HANG, NASTY_PATH, frames=()),
          finding(NOTE, "a.pcap", conn=None, endpoint=None, host="10.0.0.9")]
    old = [finding(LEAK, "a.pcap", conn=1, message="known leak")]
    bad = analysis("bad.pcap", error="truncated record header")
    return make_report([analysis("a.pcap"), analysis(NASTY_PATH), bad], fs, suppressed=old)


def test_github_annotations_shape_and_escaping():
    report = sample_report()
    text = github.render(report, cwd="/nowhere")
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 4          # 3 findings, 1 unreadable capture
    parsed = []
    for line in lines:
        m = GITHUB_LINE.match(line)
        assert m, line
        parsed.append(m.groups())
    kinds = [p[0] for p in parsed]
    assert kinds == ["warning", "error", "notice", "error"]
    leak, hang, note, unreadable = parsed
    assert leak[1] == "a.pcap" and leak[2] == "11"
    assert unescape(leak[3], True) == "TA101 half-closed-leak"
    message = unescape(leak[4])
    assert message.startswith(NASTY_MESSAGE + " (connection 0 (10.0.0.1:5555 -> 10.0.0.2:80)")
    assert "\nframes: 11, 12\n" in message and "\nremediation: fix half-closed-leak" in message
    assert "%25 stuck%3A" not in leak[4] and "100%25 stuck:%0D%0Asecond line, with: colons" \
        in leak[4]                                            # ':' ',' are kept in messages
    assert unescape(hang[1], True) == NASTY_PATH and hang[2] is None     # no frame, no line
    assert hang[1] == "dir%2Cone/a%3Ab%25c.pcap"
    assert "host 10.0.0.9" in unescape(note[4])
    assert unreadable[1] == "bad.pcap" and "truncated record header" in unreadable[4]
    assert "known leak" not in text                           # the baseline's are not shown


def test_github_escape_functions():
    assert github.escape_data("a%b\rc\nd:e,f") == "a%25b%0Dc%0Ad:e,f"
    assert github.escape_property("a%b\rc\nd:e,f") == "a%25b%0Dc%0Ad%3Ae%2Cf"
    assert github.command("notice", "m", file="x", line=None, title="t") == \
        "::notice file=x,title=t::m"


def test_github_paths_relative_to_cwd(tmp_path):
    report = make_report([analysis(str(tmp_path / "c" / "x.pcap"))],
                         [finding(LEAK, str(tmp_path / "c" / "x.pcap"))])
    assert github.render(report, cwd=tmp_path).startswith("::warning file=c/x.pcap,line=3,")
    outside = github.render(report, cwd=tmp_path / "other")
    as_given = github.escape_property(str(tmp_path / "c" / "x.pcap"))
    assert outside.startswith(f"::warning file={as_given},line=3,")


def test_gitlab_code_quality_required_keys_and_enums():
    report = sample_report()
    # a second finding with the same fingerprint (same rule, cause, capture name, subject)
    report.findings.append(finding(LEAK, "a.pcap", message=NASTY_MESSAGE, frames=(40,)))
    doc = json.loads(gitlab.render(report, cwd="/nowhere"))
    assert isinstance(doc, list) and len(doc) == len(report.findings) == 4
    for issue in doc:
        assert isinstance(issue["description"], str) and issue["description"]
        assert isinstance(issue["check_name"], str) and issue["check_name"]
        assert isinstance(issue["fingerprint"], str) and issue["fingerprint"]
        assert issue["severity"] in GITLAB_SEVERITIES
        assert isinstance(issue["location"]["path"], str)
        begin = issue["location"]["lines"]["begin"]
        assert isinstance(begin, int) and not isinstance(begin, bool) and begin >= 1
    assert len({i["fingerprint"] for i in doc}) == len(doc)          # unique, as GitLab needs
    assert doc[0]["fingerprint"] == report.findings[0].fingerprint   # reused, not invented
    assert report.findings[3].fingerprint == report.findings[0].fingerprint
    assert [i["severity"] for i in doc] == ["major", "critical", "info", "major"]
    assert [i["check_name"] for i in doc] == ["TA101", "TA102", "TA103", "TA101"]
    assert [i["location"]["lines"]["begin"] for i in doc] == [11, 1, 3, 40]
    assert doc[1]["location"]["path"] == NASTY_PATH
    assert NASTY_MESSAGE in doc[0]["description"]
    assert "known leak" not in json.dumps(doc)
    assert json.loads(gitlab.render(make_report([], []))) == []


def test_json_lines_one_finding_dict_per_line():
    report = sample_report()
    text = json_lines.render(report)
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == len(report.findings) == 3
    for line, f in zip(lines, report.findings):
        entry = json.loads(line)
        assert entry == json.loads(json.dumps(f.to_dict(), default=int))
        assert entry["fingerprint"] == f.fingerprint
    assert json.loads(lines[0])["message"] == NASTY_MESSAGE          # newline kept in the value
    assert json_lines.render(make_report([], [])) == ""
    odd = make_report([], [finding(LEAK, "x\udce9.pcap")])             # an undecodable byte
    assert json.loads(json_lines.render(odd))["capture"] == "x\\xe9.pcap"   # names.display_name


# -- through the CLI ---------------------------------------------------------------------------

def test_cli_output_format_to_stdout_and_file(tmp_path, monkeypatch):
    (tmp_path / "caps").mkdir()
    shutil.copy(SAMPLES / "keepalive-half-closed.pcap", tmp_path / "caps" / "leak.pcap")
    monkeypatch.chdir(tmp_path)
    capture = str(tmp_path / "caps" / "leak.pcap")
    r = CliRunner().invoke(main, ["analyze", capture, "--output-format", "github"])
    assert r.exit_code == 1, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(GITHUB_LINE.match(line) for line in lines), r.stdout
    assert all(" file=caps/leak.pcap," in line for line in lines)
    assert "Findings by rule" in r.stderr                   # the summary moved out of the way

    out = tmp_path / "gl.json"
    r = CliRunner().invoke(main, ["analyze", capture, "--output-format", "gitlab", "-o", str(out)])
    assert r.exit_code == 1 and "Findings by rule" in r.stdout
    issues = json.loads(out.read_text())
    assert {i["check_name"] for i in issues} == {"TA101", "TA102", "TA113"}
    assert {i["location"]["path"] for i in issues} == {"caps/leak.pcap"}

    r = CliRunner().invoke(main, ["analyze", capture, "--output-format", "json-lines",
                                  "--json", str(tmp_path / "r.json")])
    report_findings = json.loads((tmp_path / "r.json").read_text())["findings"]
    assert [json.loads(line) for line in r.stdout.splitlines()] == report_findings

    r = CliRunner().invoke(main, ["analyze", capture, "--output-format", "sarif"])
    assert r.exit_code == 2 and "Invalid value for '--output-format'" in r.output

    r = CliRunner().invoke(main, ["analyze", capture, "-o", str(tmp_path / "x.txt")])
    assert r.exit_code == 2 and "give --output-format too" in r.output
    assert not (tmp_path / "x.txt").exists()
