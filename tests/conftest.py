"""Shared fixtures: where the corpus and sample captures are, and tshark as an oracle."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_pcaps"
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus" / "zeek"
CORPUS_TRACES = sorted((CORPUS / "traces").glob("*.pcap*")) if CORPUS.is_dir() else []
SAMPLE_CAPTURES = sorted(p for p in SAMPLES.glob("*.pcap*")) if SAMPLES.is_dir() else []

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(),
                                  reason=f"../shared corpus not present at {CORPUS}")
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None,
                                  reason="tshark is not installed (apt-get install -y tshark)")


def synthetic_capture(path: Path, connections: int, seed: int, duration: float) -> Path:
    """A slice of the benchmarks' synthetic capture (``tests/benchmarks/make_synthetic.py``:
    every kind of ending at its concurrency), written to ``path``."""
    import importlib.util
    import sys
    here = ROOT / "tests" / "benchmarks"
    spec = importlib.util.spec_from_file_location("make_synthetic", here / "make_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_synthetic", module)
    spec.loader.exec_module(module)
    module.generate(path, connections=connections, seed=seed, duration=duration)
    return path


def tshark_fields(path: Path, fields: list[str], display_filter: str | None = None,
                  extra: list[str] | None = None) -> list[list[str]]:
    """Rows of ``tshark -T fields`` output, one list of field values per frame."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a"]
    for f in fields:
        cmd += ["-e", f]
    if display_filter:
        cmd += ["-Y", display_filter]
    cmd += extra or []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.fixture(scope="session")
def checked_package(tmp_path_factory) -> Path:
    """A copy of the package with the modules that read capture bytes built with bounds checks
    (tests/fuzz/checked_build.py), once a session: test_boundscheck_build.py and
    test_fuzz.py share it. Put it first on PYTHONPATH of a subprocess run outside the
    checkout."""
    pytest.importorskip("Cython", reason="Cython is needed to build the checked core")
    import traceaudit
    from fuzz.checked_build import build_checked
    return build_checked(tmp_path_factory.mktemp("checked"),
                         Path(traceaudit.__file__).resolve().parent)


def cli_run(*args, env=None):
    """``traceaudit ARGS`` in-process (click's runner): any exception but the exit is a failure.
    Paths may be bytes (names that are not UTF-8)."""
    import os

    from click.testing import CliRunner

    from traceaudit.cli import main
    argv = [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args]
    result = CliRunner(env=env).invoke(main, argv)
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), exc
    return result


def flows_json(tmp_path, *files):
    """(result, rows) of ``traceaudit flows FILES --format json``; rows None if none written."""
    import json
    out = tmp_path / "flows.json"
    result = cli_run("flows", *files, "--format", "json", "-o", out)
    return result, (json.loads(out.read_text()) if out.exists() else None)


@pytest.fixture
def counted(monkeypatch):
    """Counts rows retired and 4-tuples repaired (and which capture each repair re-read)."""
    from traceaudit import pipeline
    from traceaudit.retire import sweep
    seen = {"retired": 0, "repaired": 0, "reread": []}
    sweep_, repair_ = sweep.Retirer.sweep, pipeline._repair

    def counting_sweep(self, *args):
        before = self.retired
        sweep_(self, *args)
        seen["retired"] += self.retired - before

    def counting_repair(path, options, retirer, tuples, *args):
        seen["repaired"] += len(tuples)
        seen["reread"].append(path)
        return repair_(path, options, retirer, tuples, *args)

    monkeypatch.setattr(sweep.Retirer, "sweep", counting_sweep)
    monkeypatch.setattr(pipeline, "_repair", counting_repair)
    return seen


def held_pid(run: subprocess.Popen, hold: Path, timeout: float = 60) -> int:
    """The pid a worker wrote to ``hold/held`` when it began holding a capture
    (``TRACEAUDIT_TEST_HOLD``, ``parallel/units.py``), waiting for it while ``run`` goes on."""
    held = hold / "held"
    deadline = time.monotonic() + timeout
    while not (held.exists() and held.read_text()):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.05)
    return int(held.read_text())
