"""The JSON report's parts rendered where each capture was read (``report/json_pieces.py``,
``--jobs``) give the report, byte for byte, that the analyses themselves give."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLE_CAPTURES

from traceaudit.audit import build_report, write_reports
from traceaudit.parallel.runner import in_process
from traceaudit.parallel.steps import Audit
from traceaudit.pipeline import ReadOptions
from traceaudit.rules.config import make_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = make_config(None)


def _report(tmp_path: Path, captures, step: Audit, known=None, options=ReadOptions()):
    analyses, findings = [], []
    for done in in_process(list(captures), options, step):
        analyses.append(done.analysis)
        findings.extend(done.findings)
    report = build_report(analyses, CONFIG, known, findings=findings, tool_version="t",
                          generated_at="now")
    out = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    write_reports(report, json=str(out))
    return report, out.read_bytes()


@pytest.mark.parametrize("read", ["kept", "flat"])
def test_rendered_parts_give_the_same_report(tmp_path, read):
    """Every sample (one that is not a capture, and one with no connection, among them),
    with the keeping read and with the flat read."""
    from traceaudit.cli import FLAT_READ
    options = ReadOptions(retire=dataclasses.replace(FLAT_READ, min_bytes=0)) \
        if read == "flat" else ReadOptions()
    captures = [*SAMPLE_CAPTURES, ROOT / "README.md"]
    plain = Audit(CONFIG, keep_excerpts=False, keep_events=True)
    pieces_dir = tmp_path / "pieces"
    pieces_dir.mkdir()
    rendering = dataclasses.replace(plain, json_dir=str(pieces_dir), render_json=True)
    _, expected = _report(tmp_path, captures, plain, options=options)
    report, got = _report(tmp_path, captures, rendering, options=options)
    assert all(a.json_text is not None for a in report.analyses)
    assert any(a.json_text.rows_path == "" for a in report.analyses)     # none to write
    assert got == expected
    assert list(pieces_dir.iterdir()) == []          # each part removed once copied
    if read == "kept":
        # without the HTML report neither the timelines nor the whole table stay in memory
        assert all(not len(a.events) and "history" not in a.table for a in report.analyses)


def test_a_baseline_makes_the_report_write_its_findings_itself(tmp_path):
    """Findings a baseline takes out are not in the report: the rendered findings (all of a
    capture's) are not used then, and the report is still the analyses' own."""
    captures = SAMPLE_CAPTURES[:6]
    plain = Audit(CONFIG, keep_excerpts=False, keep_events=True)
    first, _ = _report(tmp_path, captures, plain)
    known = {f.fingerprint for f in first.findings[::2]}
    assert known
    _, expected = _report(tmp_path, captures, plain, known=known)
    (tmp_path / "pieces").mkdir()
    rendering = dataclasses.replace(plain, json_dir=str(tmp_path / "pieces"),
                                    render_json=True)
    report, got = _report(tmp_path, captures, rendering, known=known)
    assert report.suppressed and got == expected


def test_only_several_readers_render_parts():
    """One reader writes the report from the analyses (rendering parts first would only add
    a copy); ``--jobs 2`` turns it on, and only when a JSON report is asked for."""
    step = Audit(CONFIG, keep_excerpts=False, json_dir="/somewhere")
    assert not step.render_json
    assert step.with_several_readers().render_json
    assert not Audit(CONFIG, keep_excerpts=False).with_several_readers().render_json


def test_cli_jobs_two_json_alone_and_its_directory_goes(tmp_path):
    """``analyze --json`` alone (its parts rendered by both readers) against ``--jobs 1``,
    and the run's directory of parts is gone afterwards."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = {}
    for jobs in (1, 2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
        r = subprocess.run([sys.executable, "-m", "traceaudit", "analyze",
                            str(ROOT / "sample_pcaps"), "--json", str(tmp_path / f"{jobs}.json"),
                            "--jobs", str(jobs)], env=env, capture_output=True, timeout=120)
        assert r.returncode == 1, r.stderr
        out[jobs] = (tmp_path / f"{jobs}.json").read_bytes()
    strip = [o.replace(o[o.index(b'"generated_at"'):o.index(b',"captures"')], b"")
             for o in out.values()]
    assert strip[0] == strip[1]
    assert out[1].count(b'"rule":') > 20
    assert list(tmp.glob("traceaudit-json-*")) == []


def test_a_full_disk_leaves_the_part_to_the_report(tmp_path, monkeypatch):
    """No space for a capture's rendered entries: that capture keeps what the report reads
    and the report renders its part itself (nothing fails, nothing is left behind)."""
    import errno

    from traceaudit.report import json_pieces
    real = json_pieces.os.fdopen

    class Full:
        def __init__(self, fd, mode):
            self.f = real(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json_pieces.os, "fdopen", Full)
    captures = SAMPLE_CAPTURES[:4]
    plain = Audit(CONFIG, keep_excerpts=False, keep_events=True)
    _, expected = _report(tmp_path, captures, plain)
    (tmp_path / "pieces").mkdir()
    rendering = dataclasses.replace(plain, json_dir=str(tmp_path / "pieces"),
                                    render_json=True)
    report, got = _report(tmp_path, captures, rendering)
    assert all(a.json_text is None and not a.failed for a in report.analyses)
    assert got == expected
    assert list((tmp_path / "pieces").iterdir()) == []
