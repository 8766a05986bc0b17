"""Kernels run from saved machine code without importing numba, give numba's results, and fall
back to numba for anything the saved code was not made for (kernel_cache.py, jit.py)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import orjson

from traceaudit import kernel_cache

ROOT = Path(__file__).resolve().parents[1]
# the environment of the runs, without settings that turn saved machine code off
BASE_ENV = {k: v for k, v in os.environ.items()
            if not k.startswith("NUMBA_") and k != "TRACEAUDIT_NUMBA_ONLY"}

KERNELS = textwrap.dedent('''
    import numpy as np
    from traceaudit.jit import njit

    @njit(inline="always")
    def _twice(x):
        return 2 * x

    @njit(cache=True)
    def total(a, k):
        s = 0
        for v in a:
            s += _twice(v)
        return s + k

    @njit(cache=True)
    def halves(a):
        out = np.empty(len(a), np.float64)
        for i in range(len(a)):
            out[i] = a[i] / 2
        return out

    @njit(cache=True)
    def checked(n):
        if n < 0:
            raise ValueError("negative")
        return n
''')

CALLS = textwrap.dedent('''
    import sys
    import numpy as np
    import kernels
    floats = sys.argv[1] == "floats"
    a = np.arange(5.0) if floats else np.arange(5)
    print(kernels.total(a, 3), kernels.halves(np.arange(4)).tolist(), kernels.checked(7))
    try:
        kernels.checked(-1)
    except ValueError as exc:
        print("ValueError:", exc)
    print("numba" in sys.modules)
''')


def _calls(work: Path, kind: str = "ints", env: dict | None = None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CALLS, kind], capture_output=True, text=True,
                         cwd=work, timeout=600, check=False,
                         env={**BASE_ENV, "PYTHONPATH": str(work), **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_kernels_run_saved_machine_code_without_numba_and_fall_back_to_it(tmp_path):
    (tmp_path / "kernels.py").write_text(KERNELS)
    ints = ["23 [0.0, 0.5, 1.0, 1.5] 7", "ValueError: negative"]
    floats = ["23.0 [0.0, 0.5, 1.0, 1.5] 7", "ValueError: negative"]
    # first run: numba compiles, and the machine code of each overload called is saved
    assert _calls(tmp_path) == ints + ["True"]
    saved = sorted(p.name for p in (tmp_path / "__pycache__").glob("*.machine"))
    assert saved == [f"kernels.{name}.{sys.implementation.cache_tag}.machine"
                     for name in ("checked", "halves", "total")]
    # then the same calls (a kernel returning an array, one raising) without numba
    assert _calls(tmp_path) == ints + ["False"]
    # a new argument type goes to numba, once
    assert _calls(tmp_path, "floats") == floats + ["True"]
    assert _calls(tmp_path, "floats") == floats + ["False"]
    assert _calls(tmp_path) == ints + ["False"]
    # numba only, when asked (or with any NUMBA_* setting)
    assert _calls(tmp_path, env={"TRACEAUDIT_NUMBA_ONLY": "1"}) == ints + ["True"]
    assert _calls(tmp_path, env={"NUMBA_OPT": "3"}) == ints + ["True"]
    # a damaged file is ignored (and written afresh)
    total = tmp_path / "__pycache__" / f"kernels.total.{sys.implementation.cache_tag}.machine"
    total.write_bytes(b"not a pickle")
    assert _calls(tmp_path) == ints + ["True"]
    assert _calls(tmp_path) == ints + ["False"]
    # a changed source: the saved code is not used
    (tmp_path / "kernels.py").write_text(KERNELS.replace("2 * x", "3 * x"))
    assert _calls(tmp_path) == ["33 [0.0, 0.5, 1.0, 1.5] 7", "ValueError: negative", "True"]
    # what a file holds: ELF objects whose wrapper it defines, needing the CPython API
    entry = next(iter(pickle.loads(total.read_bytes())["entries"].values()))
    defined, undefined = kernel_cache.elf_symbols(entry[0])
    assert entry[1] in defined and "PyArg_UnpackTuple" in undefined


def test_argument_keys_are_equal_only_for_arguments_numba_types_alike():
    from numba import typeof

    unaligned = np.zeros(17, np.uint8)[1:].view(np.int64)
    readonly = np.zeros(3)
    readonly.setflags(write=False)
    square = np.zeros((4, 4))
    values = [np.zeros(3, np.int64), np.zeros(3, np.int32), np.zeros(3, np.uint8),
              np.zeros(3, bool), np.zeros(3), np.zeros(4), square, square.T, square[:, ::2],
              np.zeros(6)[::2], readonly, unaligned, np.zeros(()), 1, 2 ** 62, -5, True,
              False, 1.5, None, "text", (1, 2), (1, 2.0), (np.zeros(2), 1), np.int64(3),
              np.int32(3), np.float32(1), np.bool_(True), np.uint64(7)]
    keys = [kernel_cache.signature_key((v,)) for v in values]
    assert None not in keys
    types = [typeof(v) for v in values]
    for i in range(len(values)):
        for j in range(len(values)):
            if keys[i] == keys[j]:
                assert types[i] == types[j], (values[i], values[j])
    assert len(set(keys)) >= 20
    for other in ([1, 2], 2 ** 64, np.zeros(2, object), np.zeros(2, ">i8"),
                  np.zeros(2, "M8[ns]"), {"a": 1}, np.ma.zeros(2), (1, [2])):
        assert kernel_cache.signature_key((other,)) is None, other


def test_symbols_the_objects_need_must_resolve_before_they_are_loaded():
    engine = kernel_cache._Engine()
    assert engine.resolvable({"PyLong_FromLongLong", "NRT_MemInfo_call_dtor", "numba_unpickle"})
    assert not engine.resolvable({"PyLong_FromLongLong", "traceaudit_no_such_symbol"})
    assert kernel_cache.elf_symbols(b"\xcf\xfa\xed\xfe" + bytes(100)) is None      # Mach-O
    assert kernel_cache.elf_symbols(b"\x7fELF") is None                               # cut short


ANALYZE = textwrap.dedent('''
    import sys
    from traceaudit.cli import main
    try:
        main(["analyze", *sys.argv[1:]])
    except SystemExit as exc:
        assert exc.code == 1, exc.code              # the samples have findings
    print("numba" in sys.modules)
''')


def test_analyze_from_machine_code_imports_no_numba_and_reports_as_numba_does(tmp_path):
    reports = []
    for name, env in (("warm-up", {}), ("machine", {}),
                      ("numba", {"TRACEAUDIT_NUMBA_ONLY": "1"})):
        target = tmp_path / f"{name}.json"
        out = subprocess.run([sys.executable, "-c", ANALYZE, str(ROOT / "sample_pcaps"),
                              "--json", str(target), "--html", str(tmp_path / f"{name}.html")],
                             capture_output=True, text=True, cwd=ROOT, timeout=600,
                             check=False, env={**BASE_ENV, **env})
        assert out.returncode == 0, out.stderr
        numba_imported = out.stdout.splitlines()[-1]
        if name != "warm-up":
            assert numba_imported == ("False" if name == "machine" else "True")
        report = orjson.loads(target.read_bytes())
        report.pop("generated_at")
        reports.append(report)
    assert reports[1] == reports[2] == reports[0]
    assert len(reports[1]["connections"]) > 20 and reports[1]["findings"]
