"""numba starts without the registries our cached kernels never use, without importing
scipy.linalg (which stays importable), and compiles as usual when it has to
(numba_start.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from traceaudit.capture import numba_start

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys
from traceaudit.pipeline import analyze_capture
a = analyze_capture(sys.argv[1])
assert len(a.table) > 0
hidden = "scipy.linalg" not in sys.modules
import scipy.linalg
import scipy.linalg.cython_blas
print(hidden, scipy.linalg.__name__)
"""

LIGHT = r"""
import sys
from traceaudit.pipeline import analyze_capture
analyze_capture(sys.argv[1])                 # every kernel loaded from numba's cache
loaded_light = "numba.np.arraymath" not in sys.modules
# a kernel that is not cached anywhere: numba must compile it, which needs the full start
import numpy as np
from numba import njit
@njit
def total(x):
    s = 0.0
    for v in x:
        s += np.sqrt(v)
    return s
print(loaded_light, total(np.array([4.0, 9.0])), "numba.np.arraymath" in sys.modules)
"""


def _run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, check=False,
                          env={**os.environ, **(env or {})})


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="SciPy not installed")
def test_kernels_run_without_scipy_linalg_and_it_stays_importable():
    capture = next((ROOT / "sample_pcaps").glob("*.pcap"))
    for env in ({}, {"TRACEAUDIT_NUMBA_FULL_START": "1"}):
        out = _run(SCRIPT, str(capture), env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["True", "scipy.linalg"]


@pytest.mark.skipif(not numba_start.LIGHT_LOADING_VERSIONS or
                    not __import__("numba").__version__.startswith(
                        numba_start.LIGHT_LOADING_VERSIONS),
                    reason="this numba version starts the usual way (full refresh)")
def test_cached_kernels_load_light_and_new_kernels_still_compile():
    capture = ROOT / "sample_pcaps" / "half-close.pcap"
    # a first process compiles whatever is not cached yet (a fresh clone) and caches it
    warm = _run("import sys\nfrom traceaudit.pipeline import analyze_capture\n"
                "analyze_capture(sys.argv[1])", str(capture))
    assert warm.returncode == 0, warm.stderr
    out = _run(LIGHT, str(capture))
    assert out.returncode == 0, out.stderr
    # the analysis loaded every kernel from the cache without numba's registries; the
    # uncached kernel then made numba load them, and compiled correctly
    assert out.stdout.split() == ["True", "5.0", "True"]


NO_ARRAY_LIBRARY = r"""
import sys
from traceaudit.cli import main
try:
    main(["analyze", sys.argv[1], "--json", sys.argv[2]])
except SystemExit as exc:
    assert exc.code == 1, exc.code                  # the sample has findings
print("numba.np.arrayobj" in sys.modules)
"""


@pytest.mark.skipif(not numba_start.LIGHT_LOADING_VERSIONS or
                    not __import__("numba").__version__.startswith(
                        numba_start.LIGHT_LOADING_VERSIONS),
                    reason="this numba version starts the usual way (full refresh)")
def test_no_kernel_of_analyze_json_makes_numba_import_its_array_library(tmp_path):
    """A cached kernel that allocates an array (or slices one) makes numba import its array
    library when the kernel is loaded (~12 ms a run): the kernels of `analyze --json` get
    their arrays from NumPy."""
    capture = str(ROOT / "sample_pcaps" / "close-wait-leak.pcap")   # findings, timelines
    target = str(tmp_path / "report.json")
    warm = _run(NO_ARRAY_LIBRARY, capture, target)       # compiles what is not cached yet
    assert warm.returncode == 0, warm.stderr
    out = _run(NO_ARRAY_LIBRARY, capture, target)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "False"           # (after the terminal summary)


def test_light_and_full_start_give_the_same_report(tmp_path):
    reports = []
    for name, env in (("light", {}), ("full", {"TRACEAUDIT_NUMBA_FULL_START": "1"})):
        target = tmp_path / f"{name}.json"
        out = subprocess.run([sys.executable, "-m", "traceaudit.cli", "analyze",
                              str(ROOT / "sample_pcaps"), "--json", str(target)],
                             capture_output=True, text=True, cwd=ROOT, timeout=600,
                             env={**os.environ, **env})
        assert out.returncode == 1, out.stderr            # the samples have findings
        report = orjson.loads(target.read_bytes())
        report.pop("generated_at")
        reports.append(report)
    assert reports[0] == reports[1]
    assert len(reports[0]["connections"]) > 1000 and reports[0]["findings"]


IMPORT = r"""
import sys
import traceaudit.flows.assign           # a kernel module: the command's first numba import
print("scipy" in sys.modules, "yaml" in sys.modules)
import scipy, yaml                       # both still importable
"""


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None or
                    importlib.util.find_spec("yaml") is None,
                    reason="SciPy or PyYAML not installed: nothing for numba to import")
def test_numba_is_imported_without_scipy_and_yaml_unless_it_has_a_config_file(tmp_path):
    def run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True,
                             cwd=tmp_path, timeout=600, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert run() == ["False", "False"]
    # numba reads its settings from a .numba_config.yaml in the working directory: with one
    # there, PyYAML is imported as numba would
    (tmp_path / ".numba_config.yaml").write_text("")
    assert run() == ["False", "True"]
