"""Every finding's Wireshark display filters, run through tshark: the evidence is really there.

The brief: every verdict is explainable from frames the user can open in Wireshark. For each
finding on each sample capture, the finding's ``display_filter`` (JSON, terminal, HTML) must be
accepted by tshark and show every decisive frame, and the HTML report's "just the frames"
filter must select exactly the decisive frames.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import SAMPLE_CAPTURES, cli_run, needs_tshark
from traceaudit.report.html_findings import frames_filter


def _frames(capture, display_filter: str) -> set[int]:
    run = subprocess.run(["tshark", "-n", "-r", str(capture), "-Y", display_filter,
                          "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"tshark refused {display_filter!r}: {run.stderr.strip()}"
    return {int(x) for x in run.stdout.split()}


@needs_tshark
@pytest.mark.tshark
@pytest.mark.parametrize("capture", SAMPLE_CAPTURES, ids=[p.name for p in SAMPLE_CAPTURES])
def test_finding_filters_show_their_frames(capture, tmp_path):
    out = tmp_path / "r.json"
    cli_run("analyze", str(capture), "--json", str(out), "--no-merge", "--exit-zero")
    findings = json.loads(out.read_text())["findings"]
    for f in findings:
        frames = set(f["frames"])
        assert f["display_filter"], f"{f['rule']}: no display filter"
        shown = _frames(capture, f["display_filter"])
        assert frames <= shown, (f"{f['rule']}: {f['display_filter']!r} hides frames "
                                 f"{sorted(frames - shown)}")
        if frames:
            assert _frames(capture, frames_filter(f["frames"])) == frames
