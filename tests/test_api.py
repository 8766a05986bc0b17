"""The public Python API (traceaudit.analyze, Audit, traceaudit.rules): its tables say what the
reports say, its settings mean what the command line's mean, its errors are typed, and the
README's example runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from click.testing import CliRunner

import traceaudit
from traceaudit.cli import main
from traceaudit.errors import (CaptureError, CaptureNotFoundError, ConfigError,
                               TraceauditError, UnknownRuleError)

from conftest import ROOT, SAMPLES

LEAK = SAMPLES / "close-wait-leak.pcap"          # the server never closes: TA101, TA102
CLEAN = SAMPLES / "half-close.pcap"              # a graceful close: no finding


def truth(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.truth.json").read_text())


@pytest.fixture(scope="module")
def samples():
    return traceaudit.analyze(SAMPLES)


@pytest.fixture(scope="module")
def leak():
    return traceaudit.analyze(LEAK)


# -- errors ---------------------------------------------------------------------------------

def test_a_missing_path_raises_before_anything_is_read(tmp_path):
    missing = tmp_path / "missing.pcap"
    with pytest.raises(CaptureNotFoundError) as info:
        traceaudit.analyze(missing)
    err = info.value
    assert isinstance(err, CaptureError) and isinstance(err, FileNotFoundError)
    assert isinstance(err, TraceauditError)
    assert err.errno == 2 and err.filename == str(missing) and err.slug == "not-found"
    assert str(err) == f"{missing}: no such file or directory"
    # also among files that exist: nothing is analysed first
    with pytest.raises(FileNotFoundError):
        traceaudit.analyze([LEAK, missing])
    with pytest.raises(CaptureNotFoundError):
        traceaudit.analyze("missing.pcap")


def test_a_directory_without_captures_and_no_paths_at_all_raise(tmp_path):
    (tmp_path / "notes.txt").write_text("no capture here")
    with pytest.raises(CaptureError) as info:
        traceaudit.analyze(tmp_path)
    assert info.value.slug == "no-captures" and str(tmp_path) in str(info.value)
    with pytest.raises(ConfigError):
        traceaudit.analyze([])


def test_an_unreadable_capture_raises_by_default_and_is_collected_on_request(tmp_path):
    damaged = tmp_path / "cut.pcap"
    data = LEAK.read_bytes()
    damaged.write_bytes(data[:len(data) - 30])              # the last record cut short
    not_a_capture = tmp_path / "notes.pcap"
    not_a_capture.write_text("hello, this is text\n" * 4)
    with pytest.raises(CaptureError) as info:
        traceaudit.analyze(damaged)
    assert info.value.offset is not None and info.value.path == str(damaged)
    with pytest.raises(CaptureError):
        traceaudit.analyze([CLEAN, not_a_capture])

    audit = traceaudit.analyze([damaged, not_a_capture, CLEAN], errors="collect")
    assert audit.exit_code == 2
    assert [e.path for e in audit.errors] == [str(damaged), str(not_a_capture)]
    caps = audit.captures.set_index("capture")
    assert caps.loc[str(damaged), "error"] and caps.loc[str(not_a_capture), "error"]
    assert pd.isna(caps.loc[str(CLEAN), "error"])
    # the packets before the damage are analysed: the leak is still there
    assert caps.loc[str(damaged), "connections"] == 1
    assert (audit.flows["capture"] == str(damaged)).sum() == 1
    # every table holds what was read, and nothing of the file that is no capture
    assert len(audit.endpoints) == 2 * len(audit.flows) == 4
    for name in ("flows", "endpoints", "timelines", "zeek", "findings"):
        assert str(not_a_capture) not in set(getattr(audit, name)["capture"]), name


@pytest.mark.parametrize("kwargs, error", [
    ({"select": ["TA9"]}, UnknownRuleError),
    ({"ignore": "no-such-rule"}, UnknownRuleError),
    ({"settings": {"half-closed-leak": {"min_durration": 3}}}, ConfigError),
    ({"settings": {"TA101": {"min_duration": "long"}}}, ConfigError),
    ({"settings": {"nope": {"min_duration": 3}}}, UnknownRuleError),
    ({"settings": {"TA101": 30}}, ConfigError),
    ({"fail_on": "fatal"}, ConfigError),
    ({"errors": "ignore"}, ConfigError),
    ({"reader": "scapy"}, ConfigError),
    ({"jobs": 0}, ConfigError),
    ({"jobs": "2"}, ConfigError),
    ({"config": "no-such-traceaudit.toml"}, ConfigError),
    ({"baseline": "no-such-baseline.json"}, ConfigError),
])
def test_bad_settings_raise_typed_errors_naming_them(kwargs, error):
    with pytest.raises(error) as info:
        traceaudit.analyze(CLEAN, **kwargs)
    name, value = next(iter(kwargs.items()))
    text = str(info.value)
    assert name.split("_")[0] in text or str(value) in text or "nope" in text


def test_jobs_read_in_worker_processes_with_the_same_tables(samples):
    """``jobs=2``: one worker process and this one read the samples; every table is the one
    read in this process alone (the run's clock aside)."""
    two = traceaudit.analyze(SAMPLES, jobs=2)
    for table in ("captures", "flows", "endpoints", "timelines", "findings", "zeek"):
        pd.testing.assert_frame_equal(getattr(two, table), getattr(samples, table),
                                      obj=table)
    assert two.exit_code == samples.exit_code


# -- the tables ---------------------------------------------------------------------------

def test_a_close_wait_leak_reads_as_the_truth_file_says(leak):
    t = truth("close-wait-leak")
    (conn,) = t["connections"]
    flows = leak.flows
    assert len(flows) == 1 and flows.loc[0, "id"] == 0
    assert flows.loc[0, "capture"] == str(LEAK)
    assert flows.loc[0, "close_role"] == conn["closer"]
    assert flows.loc[0, "close_kind"] == conn["close_kind"]
    assert f"{flows.loc[0, 'client_ip']}:{flows.loc[0, 'client_port']}" == conn["client"]

    ends = leak.endpoints.set_index("endpoint")
    assert list(leak.endpoints["endpoint"]) == ["client", "server"]
    for side in ("client", "server"):
        assert ends.loc[side, "final_state"] == conn["states"][side][-1]
        assert f"{ends.loc[side, 'ip']}:{ends.loc[side, 'port']}" == conn[side]
    # the facts the rules read, by name: the server entered CLOSE_WAIT at the moment its
    # timeline says, on the client's FIN
    server = ends.loc["server"]
    assert server["got_fin"] == 1 and server["fin_sent"] == 0
    assert ends.loc["client", "fin_frame"] == server["got_fin_frame"] == server["cw_frame"]
    tl = leak.timelines
    entry = tl[(tl.endpoint == "server") & (tl.state == "CLOSE_WAIT")].iloc[0]
    assert entry["ts_ns"] == server["cw_since_ns"] and entry["frame"] == server["cw_frame"]
    assert entry["reason"] == "RECEIVED_FIN" and entry["why"] == "received the peer's FIN"
    # the states each endpoint went through, in order
    for side in ("client", "server"):
        states = [s for s in tl[tl.endpoint == side]["state"] if s in conn["states"][side]]
        assert list(dict.fromkeys(states)) == conn["states"][side]

    findings = leak.findings
    assert set(zip(findings["rule"], findings["endpoint"], findings["connection"])) == {
        (r["rule"], r["endpoint"], r["connection"]) for r in t["findings"]["required"]}
    # held to the end of the capture, the leak is reported with low confidence: one level
    # below its rule's severity, and the FIN_WAIT_2 it causes as info
    assert dict(zip(findings["code"], findings["severity"])) == {"TA101": "warning",
                                                                 "TA102": "info"}
    assert leak.exit_code == 1 and list(leak.failing["code"]) == ["TA101"]
    assert "TA101" in repr(leak.findings["code"].tolist()) and "exit_code 1" in repr(leak)


def test_the_tables_say_what_the_json_report_says(samples, tmp_path):
    out = tmp_path / "report.json"
    samples.to_json(out)
    doc = json.loads(out.read_text())
    conns = doc["connections"]
    flows = samples.flows
    assert len(flows) == len(conns) == samples.captures["connections"].sum()
    assert list(zip(flows["capture"], flows["id"], flows["close_kind"], flows["conn_state"])) == \
        [(c["capture"], c["id"], c["close_kind"], c["conn_state"]) for c in conns]
    ends = samples.endpoints
    assert len(ends) == 2 * len(conns)
    assert list(ends["final_state"]) == [c[side]["final_state"] for c in conns
                                         for side in ("client", "server")]
    # every timeline entry, in order, with its frame and exact time
    json_rows = [(c["capture"], c["id"], side, e["state"], e["frame"], e["why"], e["ts"])
                 for c in conns for side in ("client", "server") for e in c[side]["timeline"]]
    tl = samples.timelines
    assert len(tl) == len(json_rows)
    api_rows = [(cap, conn, side, state, None if frame < 0 else frame, why, ts / 1e9)
                for cap, conn, side, state, frame, why, ts in zip(
                    tl["capture"], tl["connection"], tl["endpoint"], tl["state"], tl["frame"],
                    tl["why"], tl["ts_ns"])]
    assert [r[:6] for r in api_rows] == [r[:6] for r in json_rows]
    assert all(abs(a[6] - j[6]) < 1e-6 for a, j in zip(api_rows, json_rows))
    # the findings are the report's, field by field
    f = samples.findings
    assert list(f["fingerprint"]) == [x["fingerprint"] for x in doc["findings"]]
    for row, entry in zip(f.to_dict("records"), doc["findings"]):
        for key, value in entry.items():
            got = row[key]
            assert (value is None and pd.isna(got)) or got == value or \
                (isinstance(value, list) and list(got) == value), (key, got, value)
    assert list(samples.captures["capture"]) == [c["path"] for c in doc["captures"]]


def test_captures_are_told_apart_by_a_capture_column(samples):
    paths = sorted(str(p) for p in SAMPLES.glob("*.pcap*"))
    assert list(samples.captures["capture"]) == paths
    for name in ("flows", "endpoints", "timelines", "zeek", "findings"):
        frame = getattr(samples, name)
        assert isinstance(frame["capture"].dtype, pd.CategoricalDtype), name
        assert list(frame["capture"].cat.categories) == paths, name
        assert set(frame["capture"]) <= set(paths) and frame["capture"].notna().all(), name
    per_capture = samples.flows.groupby("capture", observed=True)["id"]
    assert (per_capture.min() == 0).all()              # ids are numbered per capture
    counts = samples.flows["capture"].value_counts()
    assert all(counts[c] == n for c, n in zip(samples.captures["capture"],
                                              samples.captures["connections"]) if n)


def test_endpoint_and_flow_facts_are_the_trackers(samples):
    from traceaudit.tracking.facts import CONN_FIELDS, ENDPOINT_FIELDS

    ends = samples.endpoints
    assert set(ENDPOINT_FIELDS) <= set(ends.columns)
    from traceaudit.tracking.states import EndpointState
    names = {s.name for s in EndpointState}
    assert set(ends["final_state"]) <= names and set(ends["state"]) <= names
    assert set(ends.loc[ends["rst_count"] == 0, "rst_from_state"]) <= {"UNSEEN"}
    assert set(ends.loc[ends["rst_count"] > 0, "rst_from_state"]) & {"ESTABLISHED",
                                                                      "CLOSE_WAIT"}
    assert set(ends["endpoint"]) == {"client", "server"}
    for column in ("fin_frame", "cw_since_ns", "rst_count", "hindsight"):
        assert ends[column].dtype == "int64", column
    flows = samples.flows
    assert {"close_frame", "close_ns", "refused", "prev"} <= set(flows.columns)
    assert not {"initialised", "closer"} & set(flows.columns)
    assert set(CONN_FIELDS) - {"initialised", "closer"} <= set(flows.columns)
    refused = flows[flows["refused"] == 1]
    assert len(refused) and (refused["close_kind"] == "refused").all()


def test_zeek_rows_carry_zeeks_verdicts(samples):
    z = samples.zeek
    assert {"orig_h", "orig_p", "resp_h", "resp_p", "conn_state", "history"} <= set(z.columns)
    one = samples.flows.groupby("capture", observed=True).filter(lambda g: len(g) == 1)
    zone = z.groupby("capture", observed=True).filter(lambda g: len(g) == 1)
    both = one.merge(zone, on="capture", suffixes=("", "_zeek"))
    assert len(both) >= 10
    assert (both["conn_state"] == both["conn_state_zeek"]).all()


def test_findings_frame_types(samples):
    f = samples.findings
    assert list(f.columns[:13]) == ["capture", "code", "rule", "severity", "connection",
                                    "endpoint", "host", "ts", "frames", "message",
                                    "remediation", "display_filter", "fingerprint"]
    assert f["severity"].cat.ordered and list(f["severity"].cat.categories) == [
        "info", "warning", "error"]
    assert len(f[f.severity >= "warning"]) == len(samples.failing) > 0
    assert f["connection"].dtype == "Int64"
    host_level = f[f["host"].notna()]
    assert len(host_level) and host_level["connection"].isna().all()
    assert isinstance(f["frames"].iloc[0], list)
    assert f["duration_s"].notna().any() and "cause" in f.columns


def test_empty_findings_keep_their_columns():
    audit = traceaudit.analyze(CLEAN)
    assert audit.exit_code == 0 and audit.findings.empty and audit.failing.empty
    assert list(audit.findings.columns[:4]) == ["capture", "code", "rule", "severity"]
    assert audit.findings.query("code == 'TA101'").empty


# -- settings mean what the command line's mean --------------------------------------------

def test_select_ignore_settings_and_fail_on(leak):
    only = traceaudit.analyze(LEAK, select="TA101")
    assert set(only.findings["code"]) == {"TA101"}
    assert set(traceaudit.analyze(LEAK, select=["TA1"], ignore=["fin-wait-2-hang"])
               .findings["code"]) == {"TA101"}
    assert set(leak.findings["code"]) == {"TA101", "TA102"}
    # a threshold: a 4 s leak (ended by an RST) is not one when 10 s are required
    rst = SAMPLES / "close-wait-leak-rst.pcap"
    assert "TA101" in set(traceaudit.analyze(rst).findings["code"])
    longer = traceaudit.analyze(rst, settings={"half-closed-leak": {"min_duration": 10}})
    assert "TA101" not in set(longer.findings["code"])
    quiet = traceaudit.analyze(LEAK, settings={"TA101": {"severity": "info"},
                                               "TA102": {"severity": "info"}})
    assert set(quiet.findings["severity"]) == {"info"} and quiet.exit_code == 0
    strict = traceaudit.analyze(LEAK, fail_on="error")        # TA101 is a warning here
    assert strict.failing.empty and strict.exit_code == 0 and strict.fail_on == "error"
    lenient = traceaudit.analyze(LEAK, fail_on="info")
    assert len(lenient.failing) == 2 and lenient.exit_code == 1


def test_a_config_file_is_read_and_the_arguments_win(tmp_path, monkeypatch):
    cfg = tmp_path / "traceaudit.toml"
    cfg.write_text('select = ["TA102"]\nfail-on = "error"\n')
    audit = traceaudit.analyze(LEAK, config=cfg)
    assert set(audit.findings["code"]) == {"TA102"} and audit.exit_code == 0
    assert set(traceaudit.analyze(LEAK, config=cfg, select="TA101").findings["code"]) == \
        {"TA101"}
    # found upward from the current directory only when asked (config=True)
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert set(traceaudit.analyze(LEAK, config=True).findings["code"]) == {"TA102"}
    assert set(traceaudit.analyze(LEAK).findings["code"]) == {"TA101", "TA102"}


def test_a_baseline_moves_known_findings_to_suppressed(tmp_path, leak):
    baseline = tmp_path / "known.json"
    result = CliRunner().invoke(main, ["analyze", str(LEAK), "--write-baseline", str(baseline)])
    assert result.exit_code == 0, result.output
    audit = traceaudit.analyze(LEAK, baseline=baseline)
    assert audit.findings.empty and audit.exit_code == 0
    assert list(audit.suppressed["fingerprint"]) == list(leak.findings["fingerprint"])


@pytest.mark.parametrize("capture, args", [
    (CLEAN, []), (LEAK, []), (LEAK, ["--fail-on", "error"]),
    (LEAK, ["--select", "TA102", "--fail-on", "error"]),
    (SAMPLES / "connection-refused.pcap", ["--ignore", "TA1"]),
])
def test_exit_code_is_the_command_lines(capture, args):
    result = CliRunner().invoke(main, ["analyze", str(capture), *args])
    kwargs = {}
    for option, value in zip(args[::2], args[1::2]):
        kwargs[option.lstrip("-").replace("-", "_")] = value
    assert traceaudit.analyze(capture, **kwargs).exit_code == result.exit_code


def test_rules_lists_every_rule_with_its_effective_settings():
    from traceaudit.rules import registry

    table = traceaudit.rules()
    assert list(table["code"]) == sorted(r.code for r in registry().values())
    assert table["code"].is_unique and table["name"].is_unique and table["selected"].all()
    leak = table.set_index("name").loc["half-closed-leak"]
    assert leak["code"] == "TA101" and leak["thresholds"]["min_duration"] == 2.0
    assert leak["severity"] == leak["default_severity"] == "error" and leak["rationale"]
    tuned = traceaudit.rules(select="TA10", ignore="TA101",
                             settings={"TA101": {"min_duration": 30, "severity": "info"}})
    row = tuned.set_index("code").loc["TA101"]
    assert row["thresholds"]["min_duration"] == 30 and row["severity"] == "info"
    assert not row["selected"]
    assert set(tuned.loc[tuned["selected"], "code"]) == {f"TA10{i}" for i in range(2, 10)}
    # the package stays the package
    assert callable(traceaudit.rules) and "half-closed-leak" in traceaudit.rules.registry()


# -- reports -------------------------------------------------------------------------------

def test_reports_are_written_as_the_command_line_writes_them(leak, tmp_path):
    leak.to_html(tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "half-closed-leak" in html
    leak.to_junit(tmp_path / "junit.xml")
    failures = list(ET.parse(tmp_path / "junit.xml").getroot().iter("failure"))
    assert failures and "half-closed-leak" in ET.tostring(failures[0], encoding="unicode")
    leak.to_sarif(str(tmp_path / "out.sarif"))
    sarif = json.loads((tmp_path / "out.sarif").read_text())
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == set(leak.findings["code"]) or \
        {r["ruleId"] for r in sarif["runs"][0]["results"]} == set(leak.findings["rule"])
    cli = tmp_path / "cli.json"
    CliRunner().invoke(main, ["analyze", str(LEAK), "--json", str(cli)])
    api = tmp_path / "api.json"
    leak.to_json(api)
    scrub = lambda d: {k: v for k, v in d.items() if k not in ("generated_at", "tool")}  # noqa
    assert scrub(json.loads(api.read_text())) == scrub(json.loads(cli.read_text()))


# -- cost and docs -------------------------------------------------------------------------

def test_import_traceaudit_loads_neither_pandas_nor_the_pipeline():
    code = ("import sys, traceaudit; traceaudit.CaptureError; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pandas', 'numpy', 'pyarrow', 'click', 'traceaudit')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert eval(out) == ["traceaudit", "traceaudit.errors"]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- api-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no block marked <!-- api-example -->"
    return match.group(1)


def test_the_readme_example_runs(monkeypatch, capsys, tmp_path):
    """In a scratch directory beside the samples, so the report it writes lands there."""
    code = readme_example()
    assert "traceaudit.analyze(" in code and len(code.splitlines()) <= 20
    (tmp_path / "sample_pcaps").symlink_to(SAMPLES)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md:api-example", "exec"), namespace)
    audit = namespace["audit"]
    assert isinstance(audit, traceaudit.Audit) and len(audit.flows) > 100
    assert (tmp_path / "reports" / "sample_pcaps.html").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "half_closed" in out and "cw_since_ns" in out and "TA101" in out
    assert out.rstrip().endswith(
        f"{audit.exit_code} {len(audit.timelines)} {traceaudit.rules().shape}")
