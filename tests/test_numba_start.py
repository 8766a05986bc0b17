"""numba starts without the registries our cached kernels never use, without importing
scipy.linalg (which stays importable), and compiles as usual when it has to
(numba_start.py). These runs go through numba (TRACEAUDIT_NUMBA_ONLY), not the machine code
of kernel_cache, which does not import numba at all."""

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
import importlib.metadata
scans = []                                   # numba's scans for installed extensions
real_entry_points = importlib.metadata.entry_points
importlib.metadata.entry_points = lambda *a, **k: scans.append(1) or real_entry_points(*a, **k)
from traceaudit.pipeline import analyze_capture
analyze_capture(sys.argv[1])                 # every kernel loaded from numba's cache
loaded_light = "numba.np.arraymath" not in sys.modules and not scans
# a kernel that is not cached anywhere: numba must compile it, which needs the full start
import numpy as np
from numba import njit
@njit
def total(x):
    s = 0.0
    for v in x:
        s += np.sqrt(v)
    return s
print(loaded_light, total(np.array([4.0, 9.0])),
      "numba.np.arraymath" in sys.modules and len(scans) == 1)
"""


def _run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, check=False,
                          env={**os.environ, "TRACEAUDIT_NUMBA_ONLY": "1", **(env or {})})


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
    # the analysis loaded every kernel from the cache without numba's registries or its
    # extensions; the uncached kernel then made numba load both, and compiled correctly
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
                             env={**os.environ, "TRACEAUDIT_NUMBA_ONLY": "1", **env})
        assert out.returncode == 1, out.stderr            # the samples have findings
        report = orjson.loads(target.read_bytes())
        report.pop("generated_at")
        reports.append(report)
    assert reports[0] == reports[1]
    assert len(reports[0]["connections"]) > 1000 and reports[0]["findings"]


IMPORT = r"""
import sys
import traceaudit.jit
traceaudit.jit.use_numba()               # what the first kernel without machine code does
print("scipy" in sys.modules, "yaml" in sys.modules)
import scipy, yaml                       # both still importable
print(scipy.__file__.startswith(sys.argv[1]), yaml.__file__.startswith(sys.argv[1]))
"""


def test_numba_is_imported_without_scipy_and_yaml_unless_it_has_a_config_file(tmp_path):
    # stand-ins for SciPy and PyYAML, first on the path, so the test does not depend on what
    # is installed: numba imports both when they can be found
    stand_ins = tmp_path / "stand_ins"
    for name, body in (("scipy", '__version__ = "1.14.0"\n'),
                       ("yaml", "def safe_load(stream):\n    return None\n")):
        (stand_ins / name).mkdir(parents=True)
        (stand_ins / name / "__init__.py").write_text(body)
    work = tmp_path / "work"
    work.mkdir()
    path = os.pathsep.join(p for p in (str(stand_ins), os.environ.get("PYTHONPATH")) if p)

    def run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", IMPORT, str(stand_ins)],
                             capture_output=True, text=True, cwd=work, timeout=600,
                             check=False, env={**os.environ, "PYTHONPATH": path})
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert run() == ["False", "False", "True", "True"]
    # numba reads its settings from a .numba_config.yaml in the working directory: with one
    # there, PyYAML is imported as numba would
    (work / ".numba_config.yaml").write_text("")
    assert run() == ["False", "True", "True", "True"]


LAZY_LINKING = r"""
import sys
import llvmlite.binding as ll
from numba import njit
from traceaudit.capture.walk import units_to_ns
from traceaudit.pipeline import analyze_capture
from traceaudit.tracking import kernel
analyze_capture(sys.argv[1])                     # kernels loaded from the cache, lightly
print(units_to_ns(1234567, 1000, 5))             # loaded lightly too (no compilation yet)
if sys.argv[2] == "check":
    # the symbols read from the object code of each lightly loaded library: numba's engine
    # knows every one it would have listed from the library's linking module (all but
    # private constant tables, which are never looked up by name)
    checked = 0
    for dispatcher in (kernel.track_batch.dispatcher(), units_to_ns.dispatcher()):
        for cres in dispatcher.overloads.values():
            library = cres.library
            module = ll.parse_bitcode(library.__dict__["_traceaudit_linking_bitcode"])
            wanted = {g.name for group in (module.functions, module.global_variables)
                      for g in group
                      if not g.is_declaration and g.linkage != ll.Linkage.private}
            missing = wanted - library._codegen._engine._defined_symbols
            assert wanted and not missing, sorted(missing)[:3]
            # asked for its linking module (a compilation that links it), it parses it then
            linking = library._get_module_for_linking()
            assert wanted <= {f.name for f in linking.functions if not f.is_declaration} | \
                {g.name for g in linking.global_variables if not g.is_declaration}
            checked += 1
    print(checked)
# a new function calling a lightly loaded kernel: numba links that kernel's module (parsed
# only now), and the result must be right
@njit
def via(units):
    return units_to_ns(units, 1000, 5) + 1
print(via(1234567))
"""


@pytest.mark.skipif(not numba_start.LIGHT_LOADING_VERSIONS or
                    not __import__("numba").__version__.startswith(
                        numba_start.LIGHT_LOADING_VERSIONS),
                    reason="this numba version starts the usual way (full refresh)")
def test_kernels_loaded_without_their_linking_module_define_the_same_symbols_and_link():
    capture = str(ROOT / "sample_pcaps" / "half-close.pcap")
    warm = _run(LAZY_LINKING, capture, "warm")            # compiles what is not cached yet
    assert warm.returncode == 0, warm.stderr
    out = _run(LAZY_LINKING, capture, "check")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1234567000005", "2", "1234567000006"]
