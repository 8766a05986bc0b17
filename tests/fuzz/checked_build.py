"""A copy of the package whose modules that index with values from the file are compiled with
bounds checks (``TRACEAUDIT_BOUNDSCHECK=1``, at -O0): an out-of-bounds index there raises
IndexError where the normal build would read past an array. Put the copy first on PYTHONPATH
of a process run outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: modules rebuilt with bounds checks: everything that indexes with values from the file
CHECKED = ("traceaudit.capture.walk", "traceaudit.capture.decode", "traceaudit.flows.assign",
           "traceaudit.tracking.kernel", "traceaudit.tracking.zeek_kernel")


def build_checked(work: Path, installed: Path) -> Path:
    """Copy the sources to ``work``, the other compiled modules from ``installed`` (the
    package directory of a built traceaudit), and compile CHECKED there; returns ``work``."""
    shutil.copytree(ROOT / "traceaudit", work / "traceaudit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for built in installed.rglob("*.so"):      # the modules not rebuilt, from the install
        target = work / "traceaudit" / built.relative_to(installed)
        if not target.exists():
            shutil.copy(built, target)
    shutil.copy(ROOT / "setup.py", work / "setup.py")
    env = dict(os.environ, TRACEAUDIT_BOUNDSCHECK="1", TRACEAUDIT_EXTENSIONS=",".join(CHECKED))
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace",
                            "--force"], cwd=work, env=env, capture_output=True, text=True)
    if build.returncode != 0:
        raise RuntimeError(f"the checked build failed:\n{build.stderr[-3000:]}")
    return work
