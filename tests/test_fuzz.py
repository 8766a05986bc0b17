"""The fuzz target (tests/fuzz/run.py), CI-sized, on the core built with bounds checks.

Hypothesis damages valid captures and reads them under hostile names through the record
walk, the decoder and the stages after them: nothing but a ``CaptureError`` naming the file
and the byte offset, no out-of-bounds index, and a file cut short keeps exactly the packets
before the cut. ``python3 tests/fuzz/run.py --minutes 30`` is the longer run (docs/design.md).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("hypothesis")

#: inputs per property here (two properties); the whole test takes ~30 s on a loaded 2-core
#: machine, after the checked build it shares with test_boundscheck_build.py
EXAMPLES = 400


def test_fuzz_target_on_the_checked_core(checked_package, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(checked_package))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz" / "run.py"),
                           "--examples", str(EXAMPLES)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert proc.stdout.startswith(f"fuzzing {checked_package}"), proc.stdout
    inputs = int(proc.stdout.splitlines()[-1].split(" inputs")[0])
    assert inputs >= EXAMPLES and "0 failures" in proc.stdout, proc.stdout
    assert "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
