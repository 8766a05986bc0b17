"""A read-only install answers as a writable one: no cache to write, nothing compiled at run time.

The package directory and ``$HOME`` are bind-mounted read-only in a private mount namespace, so
even root cannot write there (EROFS), as in a container image run with ``--user`` or a CI image
whose site-packages belong to another user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import traceaudit
from conftest import SAMPLES

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to mount the install read-only")

PACKAGE = Path(traceaudit.__file__).resolve().parent


def _analyze(tmp_path: Path, name: str, read_only: bool) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / f"{name}.json"
    home = tmp_path / f"{name}-home"
    home.mkdir()
    command = (f'"{sys.executable}" -m traceaudit analyze "{SAMPLES / "close-wait-leak.pcap"}" '
               f'--json "{out}"')
    if read_only:
        mounts = " && ".join(f'mount --bind "{d}" "{d}" && mount -o remount,bind,ro "{d}"'
                             for d in (PACKAGE, home))
        probe = f'! touch "{PACKAGE}/probe" 2>/dev/null && ! touch "{home}/probe" 2>/dev/null'
        command = f"{mounts} && {probe} && {command}"
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", command]
    else:
        argv = ["sh", "-c", command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HOME"] = str(home)
    run = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    report = json.loads(out.read_text()) if out.exists() else {}
    report.pop("generated_at", None)
    return run, report


def test_read_only_install_answers_like_a_writable_one(tmp_path):
    writable, expected = _analyze(tmp_path, "writable", read_only=False)
    read_only, got = _analyze(tmp_path, "read-only", read_only=True)
    assert "Traceback" not in read_only.stderr, read_only.stderr
    assert read_only.returncode == writable.returncode == 1, read_only.stderr  # findings
    assert got and got == expected
    assert any(f["rule"] == "half-closed-leak" for f in got["findings"])
