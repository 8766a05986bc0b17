"""pytest plugin (entry point ``pytest11: traceaudit``): audit recorded captures in a test suite.

- the ``traceaudit_check`` fixture: ``traceaudit_check("captures/login.pcap", select=["TA1"])``
  fails the test with the findings' messages (``traceaudit.testing.check``); relative paths are
  taken from pytest's rootdir; ``@pytest.mark.traceaudit(select=..., ...)`` on a test gives
  its calls default options.
- captures as test items: every capture file under the directories named by the
  ``traceaudit_captures`` ini option (relative to the ini file) or ``--traceaudit-captures
  DIR`` becomes one test (marked ``traceaudit``) that fails with its findings' messages;
  ``traceaudit_select``, ``traceaudit_ignore`` and ``traceaudit_fail_on`` choose the rules.

Settings file: ``traceaudit_config`` (ini), else the one ``traceaudit analyze`` finds from the
rootdir upward, else the defaults. Nothing here imports pandas or the pipeline until a capture is
audited: the plugin costs nothing in a session that does not use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

_DIRS = pytest.StashKey[list]()
_OPTIONS = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("traceaudit", "traceaudit: audit recorded packet captures")
    group.addoption("--traceaudit-captures", action="append", default=[], metavar="DIR",
                    help="Audit every capture under DIR as a test item (repeatable); DIR is "
                         "also collected.")
    parser.addini("traceaudit_captures", type="paths", default=[],
                  help="Directories whose captures are audited as test items.")
    parser.addini("traceaudit_select", type="args", default=[],
                  help="Rules the capture items run (names, codes, code prefixes).")
    parser.addini("traceaudit_ignore", type="args", default=[],
                  help="Rules the capture items do not run.")
    parser.addini("traceaudit_fail_on", default="",
                  help="Lowest severity that fails a capture item: info, warning, error.")
    parser.addini("traceaudit_config", type="paths", default=[],
                  help="traceaudit settings file (default: found from the rootdir upward).")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "traceaudit(**options): default traceaudit.analyze options for the "
                   "traceaudit_check fixture; set on the capture items the plugin collects")
    given = [Path(d).absolute() for d in config.getoption("traceaudit_captures")]
    dirs = [Path(d).absolute() for d in config.getini("traceaudit_captures")] + given
    config.stash[_DIRS] = dirs
    # a directory named on the command line is collected even when no argument covers it
    args = [Path(a.split("::")[0]).absolute() for a in config.args]
    for d in given:
        if not any(d == a or a in d.parents for a in args):
            config.args.append(str(d))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    dirs = parent.config.stash.get(_DIRS, None)
    if not dirs or not any(d == file_path or d in file_path.parents for d in dirs):
        return None
    from traceaudit.capture import CAPTURE_SUFFIXES
    if not file_path.name.lower().endswith(CAPTURE_SUFFIXES):
        return None
    return CaptureFile.from_parent(parent, path=file_path)


def _options(config: pytest.Config) -> dict[str, Any]:
    """The settings file every audit of this session uses unless told otherwise (looked for
    once, when first needed)."""
    options = config.stash.get(_OPTIONS, None)
    if options is None:
        chosen = config.getini("traceaudit_config")
        if chosen:
            options = {"config": chosen[0]}
        else:
            from traceaudit.rules.config import find_config
            found = find_config(config.rootpath)
            options = {"config": found[0]} if found else {}
        config.stash[_OPTIONS] = options
    return dict(options)


class CaptureFile(pytest.File):
    """A capture file under a ``traceaudit_captures`` directory: one test item."""

    def collect(self):
        yield CaptureItem.from_parent(self, name="traceaudit")


class CaptureItem(pytest.Item):
    """Audits one capture; fails with the findings at or above ``traceaudit_fail_on``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_marker("traceaudit")

    def runtest(self) -> None:
        from traceaudit.testing import check

        ini = self.config.getini
        options = _options(self.config)
        if ini("traceaudit_select"):
            options["select"] = ini("traceaudit_select")
        if ini("traceaudit_ignore"):
            options["ignore"] = ini("traceaudit_ignore")
        if ini("traceaudit_fail_on"):
            options["fail_on"] = ini("traceaudit_fail_on").strip()
        check(self.path, **options)

    def repr_failure(self, excinfo, style=None):
        from traceaudit.errors import TraceauditError
        from traceaudit.testing import AuditFailure, failure_message
        if isinstance(excinfo.value, AuditFailure):
            return failure_message(excinfo.value.audit, root=self.config.rootpath)
        if isinstance(excinfo.value, TraceauditError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"traceaudit: {self.path.name}"


@pytest.fixture
def traceaudit_check(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``traceaudit_check(paths, **options)``: ``traceaudit.analyze(paths, **options)`` that
    fails the test with the findings' messages when the audit fails (findings at or above
    ``fail_on``), and returns the ``Audit`` when it passes. Relative paths are taken from the
    rootdir; options default to those of a ``@pytest.mark.traceaudit(...)`` marker."""
    root = request.config.rootpath
    marker = request.node.get_closest_marker("traceaudit")
    defaults = {**_options(request.config), **(marker.kwargs if marker else {})}

    def check(paths, **options: Any):
        from traceaudit.testing import AuditFailure, check as audit_check, failure_message
        given = [paths] if isinstance(paths, (str, Path)) or hasattr(paths, "__fspath__") \
            else list(paths)
        resolved = [Path(p) if Path(p).is_absolute() else root / p for p in given]
        try:
            return audit_check(resolved, **{**defaults, **options})
        except AuditFailure as failure:
            message = failure_message(failure.audit, root=root)
        pytest.fail(message, pytrace=False)       # (outside the handler: no chained report)

    return check
