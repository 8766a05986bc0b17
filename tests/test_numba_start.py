"""numba starts without importing scipy.linalg, which stays importable (numba_start.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys
from traceaudit.pipeline import analyze_capture
a = analyze_capture(sys.argv[1])
assert len(a.flows) > 0
hidden = "scipy.linalg" not in sys.modules
import scipy.linalg
import scipy.linalg.cython_blas
print(hidden, scipy.linalg.__name__)
"""


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="SciPy not installed")
def test_kernels_run_without_scipy_linalg_and_it_stays_importable():
    capture = next((ROOT / "sample_pcaps").glob("*.pcap"))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(capture)], capture_output=True,
                         text=True, cwd=ROOT, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "scipy.linalg"]
