"""The boundary between the tracker core and Python: facts declared once, read by name.

The structs of ``tracking/facts.pxd`` are the only declaration of the tracker's facts: the
NumPy dtypes Python reads are built from them, so these tests read the .pxd itself. The enums of
``tracking/states.pxd`` are Python's ``EndpointState``, ``Reason`` ... And rules and reports
read facts by name: they never import a compiled kernel module.
"""

from __future__ import annotations

import ast
import re
from enum import IntEnum
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from traceaudit.tracking import states as S
from traceaudit.tracking.classify import KIND_LABELS, ROLE_LABELS
from traceaudit.tracking.facts import CONN_FACTS, ENDPOINT_FACTS

PACKAGE = ROOT / "traceaudit"


def _struct_fields(name: str) -> list[tuple[str, str]]:
    """(C type, field) of struct ``name`` in facts.pxd, in declaration order."""
    text = (PACKAGE / "tracking" / "facts.pxd").read_text()
    body = re.search(rf"ctypedef struct {name}:\n((?:[ \t]+.*\n|\n)*)", text).group(1)
    return re.findall(r"^[ \t]+(\w+)[ \t]+(\w+)[ \t]*(?:#.*)?$", body, re.M)


@pytest.mark.parametrize("struct, dtype, count", [("EndpointFacts", ENDPOINT_FACTS, 72),
                                                  ("ConnFacts", CONN_FACTS, 16)])
def test_dtypes_are_the_structs(struct, dtype, count):
    """Exactly the struct's fields, in its order, all int64, packed: 8 bytes a field."""
    fields = _struct_fields(struct)
    assert len(fields) == count
    assert all(ctype == "int64_t" for ctype, _ in fields)
    assert dtype.names == tuple(name for _, name in fields)
    assert all(dtype.fields[name][0] == np.dtype(np.int64) for name in dtype.names)
    assert all(dtype.fields[name][0].type is np.int64 for name in dtype.names)
    assert [dtype.fields[name][1] for name in dtype.names] == list(range(0, 8 * count, 8))
    assert dtype.itemsize == 8 * count


def test_tracked_facts_have_those_dtypes():
    from traceaudit.pipeline import analyze_capture
    a = analyze_capture(ROOT / "sample_pcaps" / "normal-close-client.pcap")
    ends, conns = a.tracked.endpoints, a.tracked.conns
    assert ends.dtype == ENDPOINT_FACTS and ends.shape == (len(a.table), 2)
    assert conns.dtype == CONN_FACTS and conns.shape == (len(a.table),)
    assert ends.flags.c_contiguous and conns.flags.c_contiguous
    assert conns["initialised"].tolist() == [1]
    assert conns["closer"][0] == S.Closer.CLIENT
    assert ends["state"].tolist() == [[S.EndpointState.TIME_WAIT, S.EndpointState.CLOSED]]
    assert ends[0, 0]["fin_frame"] < ends[0, 1]["fin_frame"]


def test_enums_are_int_enums_in_value_order():
    for enum in (S.EndpointState, S.Reason, S.Closer, S.CloseKind, S.Hindsight, S.Answered):
        assert issubclass(enum, IntEnum)
        assert [int(m) for m in enum] == sorted(int(m) for m in enum)
    E = S.EndpointState
    assert [(m.name, int(m)) for m in E][:2] == [("UNSEEN", -1), ("LISTEN", 0)]
    assert len(E) == 12 and E(-1) is E.UNSEEN and E(10) is E.CLOSED
    assert sorted(E, key=int) == list(E)
    assert S.state_name(9) == "TIME_WAIT"
    with pytest.raises(ValueError):
        S.state_name(11)
    assert len(S.Reason) == 19 and set(S.REASON_TEXT) == set(S.Reason)
    assert S.Reason.TIME_WAIT_SKIPPED == 14 and S.Reason.FIN_WAIT_2_EXPIRED == 15
    assert [int(m) for m in S.Closer] == [-1, 0, 1, 2]
    assert [int(b) for b in S.Hindsight] == [1, 2, 4, 8, 16, 32]
    assert [int(b) for b in S.Answered] == [1, 2, 4, 8]


def test_close_kind_and_role_codes_are_the_enums():
    assert list(KIND_LABELS) == [S.CLOSE_KIND_LABELS[k] for k in S.CloseKind]
    assert list(KIND_LABELS) == ["open", "half_closed", "graceful", "reset", "refused"]
    for closer in (S.Closer.CLIENT, S.Closer.SERVER, S.Closer.SIMULTANEOUS):
        assert ROLE_LABELS[closer] == S.CLOSER_LABELS[closer]
    assert ROLE_LABELS[-1] == S.CLOSER_LABELS[S.Closer.NONE] == "none"


# -- rules and reports never reach into the compiled core -----------------------------------------

#: Compiled modules that declare a vocabulary and run no kernel: the facts' dtypes, the enums,
#: the event columns, the TCP flag bits.
DECLARATIONS = {"traceaudit.tracking.facts", "traceaudit.tracking.states",
                "traceaudit.tracking.events", "traceaudit.capture.tcpflags"}


def _compiled_modules() -> set[str]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts)
            for p in PACKAGE.rglob("*.pyx")}


def _cython_imports(text: str) -> str:
    """The import and cimport statements of Cython source, as Python import statements."""
    statements, pending = [], None
    for line in re.sub(r"\bcimport\b", "import", text).splitlines():
        line = line.split("#")[0].strip()
        if pending is None and not re.match(r"(from\s+[\w.]+\s+)?import\s", line):
            continue
        pending = line if pending is None else f"{pending} {line}"
        if pending.count("(") == pending.count(")") and not pending.endswith("\\"):
            statements.append(pending.replace("\\", " "))
            pending = None
    return "\n".join(statements)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Dotted names of every module ``path`` imports (anywhere in it: functions and
    TYPE_CHECKING blocks too); for ``from a import b``, also ``a.b``, which may be a module."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    text = path.read_text()
    tree = ast.parse(text if path.suffix == ".py" else _cython_imports(text), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _checked_files() -> list[Path]:
    return sorted(p for folder in ("rules", "report") for p in (PACKAGE / folder).iterdir()
                  if p.suffix in (".py", ".pyx"))


@pytest.mark.parametrize("path", _checked_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rules_and_reports_import_no_compiled_kernel(path):
    """A rule or report reads the tracker's facts by name (``Tracked.endpoints["fin_ns"]``)
    and its states as enums: it never imports ``traceaudit.tracking.kernel``,
    ``zeek_kernel`` or any other compiled kernel module. (A package's own compiled helpers,
    report/_census.pyx and report/_json_text.pyx, are that package's code.)"""
    own = ".".join(path.relative_to(ROOT).parts[:2]) + "."
    kernels = {m for m in _compiled_modules() - DECLARATIONS if not m.startswith(own)}
    assert not _imports(path) & kernels


def test_the_import_check_sees_kernel_imports(tmp_path):
    """The check above would catch each way of importing a kernel."""
    rules = tmp_path / "traceaudit" / "rules"
    rules.mkdir(parents=True)
    cases = {"a.py": "from traceaudit.tracking import kernel as K\n",
             "b.py": "def f():\n    import traceaudit.tracking.zeek_kernel\n",
             "c.py": "from ..tracking.kernel import track_batch\n",
             "d.pyx": "from traceaudit.retire.kernels cimport (\n    select_retirable)\n"}
    expected = {"a.py": "traceaudit.tracking.kernel", "b.py": "traceaudit.tracking.zeek_kernel",
                "c.py": "traceaudit.tracking.kernel", "d.pyx": "traceaudit.retire.kernels"}
    for name, text in cases.items():
        (rules / name).write_text(text)
    for name, module in expected.items():
        assert module in _imports(rules / name, tmp_path), name
