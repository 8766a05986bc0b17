"""The public Python API: ``analyze`` captures into an ``Audit`` of pandas DataFrames; ``rules``.

The same run as ``traceaudit analyze`` (same settings order, rules, findings, reports and exit
code), for notebooks, scripts and tests. Nothing here prints or exits; every error is a
``TraceauditError`` (``traceaudit.errors``). Reference and examples: ``docs/api.md``.

Time columns keep the unit their name says: ``*_ts`` are epoch seconds as floats (the nearest
double, as the JSON report and ``traceaudit flows`` write them), ``*_ns`` are epoch
nanoseconds as int64 (exact: the tracker's facts and the timelines).
"""

from __future__ import annotations

import os
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Union

from traceaudit.errors import CaptureError, CaptureNotFoundError, ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from traceaudit.audit import AuditReport
    from traceaudit.rules.config import RulesConfig

PathLike = Union[str, "os.PathLike[str]"]
ERROR_MODES = ("raise", "collect")


def analyze(paths: PathLike | Iterable[PathLike], *,
            select: str | Iterable[str] | None = None,
            ignore: str | Iterable[str] | None = None,
            settings: Mapping[str, Mapping[str, Any]] | None = None,
            config: PathLike | bool | None = None,
            fail_on: str | None = None,
            baseline: PathLike | None = None,
            errors: str = "raise",
            reader: str = "native",
            verify_checksums: bool = False,
            merge: bool | None = None,
            msl2: float = 60.0,
            fin_timeout: float = 60.0,
            jobs: int = 1) -> Audit:
    """Read captures, infer how every TCP connection ended, run the rules: an ``Audit``.

    ``paths``: a capture file or a directory (every capture in it, recursively, recognised by
    its first bytes), or a list of them. Rotated pieces of one capture (tcpdump ``-C``/``-W``/
    ``-G``, dumpcap rings, editcap splits) are read as one timeline; ``merge=True`` joins every
    capture given, ``merge=False`` none (the command line's ``--merge``/``--no-merge``). A path that does not exist
    raises ``CaptureNotFoundError`` (a ``FileNotFoundError``) before anything is read, and a
    directory holding no capture raises ``CaptureError`` (slug ``no-captures``).

    Rules and settings, applied in this order (as the command line does):

    - ``config``: a settings file (``traceaudit.toml``, or a ``pyproject.toml`` with a
      ``[tool.traceaudit]`` table); ``True`` finds one from the current directory upward as
      ``traceaudit analyze`` does; ``None`` (default): the built-in defaults.
    - ``select`` / ``ignore``: rule names, codes or code prefixes (``"TA1"``), a list or one
      comma-separated string; ``select`` replaces the file's, ``ignore`` adds to it.
    - ``fail_on``: ``"info"``, ``"warning"`` (default) or ``"error"``: what ``exit_code`` and
      ``Audit.failing`` count.
    - ``settings``: per rule (name or code) its thresholds and severity, as the file's
      ``[rules.X]`` tables: ``{"half-closed-leak": {"min_duration": 30, "severity": "info"}}``.
    - ``baseline``: a baseline file (``traceaudit analyze --write-baseline``): the findings it
      holds move to ``Audit.suppressed``.

    ``errors``: a capture that cannot be read to its end (not a capture, damaged, cut short)
    raises its ``CaptureError`` with ``"raise"`` (default); with ``"collect"`` the run goes
    on, the packets before the damage are analysed, and the error is in ``Audit.errors`` and
    the ``error`` column of ``Audit.captures`` (``exit_code`` is then 2).

    ``reader`` (``"native"`` or ``"tshark"``), ``verify_checksums``, ``msl2`` and
    ``fin_timeout`` are the command line's ``--reader``, ``--verify-checksums``, ``--msl2``
    and ``--fin-timeout``.

    ``jobs``: how many captures (or rotated sets) are read at once. 1 (default) reads them one
    after another in this process; N > 1 reads them in N - 1 worker processes and this one,
    as ``traceaudit analyze --jobs N`` does (the same results; a script doing so needs the
    ``if __name__ == "__main__":`` guard, as any use of ``multiprocessing`` does).

    Raises ``CaptureError``, ``ConfigError`` (bad settings) or ``UnknownRuleError`` (a rule
    that does not exist).
    """
    from datetime import datetime, timezone

    from traceaudit import __version__
    from traceaudit.audit import build_report
    from traceaudit.capture import READERS
    from traceaudit.capture.sets import group_captures
    from traceaudit.parallel.steps import RulesOnWhole
    from traceaudit.parallel.units import apply_step
    from traceaudit.pipeline import ReadOptions, analyze_captures
    from traceaudit.rules.baseline import load_baseline
    from traceaudit.tracking.tracker import TrackerConfig

    started = time.monotonic()
    if errors not in ERROR_MODES:
        raise ConfigError(f"errors={errors!r}: expected one of {', '.join(ERROR_MODES)}")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs={jobs!r}: expected a whole number, 1 or more")
    if reader not in READERS:
        raise ConfigError(f"reader={reader!r}: expected one of {', '.join(READERS)}")
    rules_config = _rules_config(config, select, ignore, settings, fail_on)
    baseline = baseline if baseline is not None else rules_config.baseline
    known = load_baseline(os.fspath(baseline)) if baseline is not None else None
    files = capture_files(paths)
    options = ReadOptions(reader=reader, verify_checksums=verify_checksums,
                          tracker=TrackerConfig(msl2_s=msl2, fin_timeout_s=fin_timeout))
    units, step = group_captures(files, merge), RulesOnWhole(rules_config)
    if jobs == 1:       # here, with the read-ahead thread as ever (``read_units``' jobs=1 is
                        # the command line's one core)
        done = (apply_step(a, step, options) for a in analyze_captures(units, options))
    else:
        from traceaudit.parallel import read_units
        done = read_units(units, options, step, jobs=jobs)
    analyses, findings = [], []
    for one in done:
        if one.analysis.failed and errors == "raise":
            raise one.analysis.stats.error
        findings.extend(one.findings)
        analyses.append(one.analysis)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    report = build_report(analyses, rules_config, known, findings=findings,
                          tool_version=__version__, generated_at=generated,
                          elapsed_s=time.monotonic() - started)
    return Audit(report)


def rules(*, select: str | Iterable[str] | None = None,
          ignore: str | Iterable[str] | None = None,
          settings: Mapping[str, Mapping[str, Any]] | None = None,
          config: PathLike | bool | None = None) -> pd.DataFrame:
    """Every rule as a DataFrame row, in code order: ``code``, ``name``, ``title``,
    ``severity`` (after ``settings``/``config``), ``default_severity``, ``selected`` (would
    ``analyze`` with the same ``select``/``ignore``/``config`` run it), ``thresholds`` (a
    dict: the values it would use), ``rationale``, ``remediation``, ``references`` (a list).

    The arguments mean what they mean to ``analyze``. ``traceaudit rules NAME`` explains one
    rule at length.
    """
    import pandas as pd

    from traceaudit.rules import registry
    from traceaudit.rules.model import Severity

    rules_config = _rules_config(config, select, ignore, settings, None)
    active = {r.name for r in rules_config.active_rules()}
    rows = [{"code": r.code, "name": r.name, "title": r.title,
             "severity": rules_config.severity(r).label, "default_severity": r.severity.label,
             "selected": r.name in active, "thresholds": rules_config.params(r),
             "rationale": r.rationale, "remediation": r.remediation,
             "references": list(r.references)} for r in registry().values()]
    frame = pd.DataFrame(rows, columns=["code", "name", "title", "severity", "default_severity",
                                        "selected", "thresholds", "rationale", "remediation",
                                        "references"])
    severity = pd.CategoricalDtype([s.label for s in Severity], ordered=True)
    for column in ("severity", "default_severity"):
        frame[column] = frame[column].astype(severity)
    return frame


def capture_files(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """The capture files ``paths`` name (directories expanded, sorted), checked to exist:
    ``CaptureNotFoundError`` for a missing path, ``CaptureError`` (slug ``no-captures``) for a
    directory without captures."""
    from traceaudit.capture import CAPTURE_SUFFIXES, expand_paths

    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not given:
        raise ConfigError("no capture paths given")
    files: list[Path] = []
    for item in given:
        if not isinstance(item, (str, os.PathLike)):
            raise ConfigError(f"{item!r} is not a path")
        path = Path(item)
        if not path.exists():
            raise CaptureNotFoundError(os.fspath(item))
        found = expand_paths([path])
        if not found:
            raise CaptureError(os.fspath(item), "no capture files (" + ", ".join(
                f"*{s}" for s in CAPTURE_SUFFIXES) + ") in this directory", slug="no-captures")
        files.extend(found)
    return files


def _rules_config(config: PathLike | bool | None, select, ignore,
                  settings: Mapping[str, Mapping[str, Any]] | None,
                  fail_on: str | None) -> RulesConfig:
    """``make_config`` with the API's argument names in its error messages."""
    from traceaudit.rules.config import check_rule_names, make_config

    if config is not None and not isinstance(config, (bool, str, os.PathLike)):
        raise ConfigError(f"config={config!r}: expected a settings file path, True or None")
    path = None if isinstance(config, bool) else config
    return make_config(path, discover=config is True,
                       select=None if select is None else
                       check_rule_names(_entries(select, "select"), "select"),
                       ignore=check_rule_names(_entries(ignore, "ignore"), "ignore"),
                       fail_on=fail_on, settings=settings, origin="settings")


def _entries(value: str | Iterable[str] | None, name: str) -> list[str]:
    """Rule entries from one comma-separated string or a list of them."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{name}: expected rule names, codes or code prefixes, got {value!r}")
    return [e for v in items for e in v.split(",")]


class Audit:
    """One run's results: what ``analyze`` returns.

    DataFrames (made on first use, then kept; every one has a ``capture`` column naming the
    file each row comes from, a categorical in the order the captures were read):

    - ``captures``: one row per capture file (format, packets, time span, warnings, error).
    - ``flows``: one row per TCP connection: the ``traceaudit flows`` table (ids, addresses,
      times, packet and byte counts, final states, close role and kind, Zeek's conn_state and
      history) and the tracker's connection facts.
    - ``endpoints``: one row per endpoint of each connection (client, then server): its final
      state, the connection's close role and kind, and every fact the rules read.
    - ``timelines``: one row per state transition of each endpoint, in time order.
    - ``findings``: one row per finding; ``suppressed``: those a baseline accepted.
    - ``zeek``: one row per connection as Zeek's conn.log would log it.

    Reports: ``to_json``, ``to_html``, ``to_junit``, ``to_sarif`` (``"-"`` is standard
    output; files are written atomically). ``exit_code`` is what ``traceaudit analyze``
    would exit with. ``report`` is the run's ``traceaudit.audit.AuditReport`` (internal types).
    """

    def __init__(self, report: AuditReport) -> None:
        self.report = report

    def __repr__(self) -> str:
        r = self.report
        connections = sum(len(a.table) for a in r.analyses)
        return (f"<Audit: {len(r.analyses)} capture(s), {connections} connection(s), "
                f"{len(r.findings)} finding(s), {len(r.failing)} at or above "
                f"{r.fail_on.label}, exit_code {self.exit_code}>")

    # -- verdict -------------------------------------------------------------------------------
    @property
    def exit_code(self) -> int:
        """``traceaudit analyze``'s exit status: 0 no finding at or above ``fail_on``, 1 there
        are, 2 a capture could not be read to its end (``errors="collect"``)."""
        return self.report.exit_code

    @property
    def fail_on(self) -> str:
        """The lowest severity that fails the audit: ``info``, ``warning`` or ``error``."""
        return self.report.fail_on.label

    @property
    def errors(self) -> list[CaptureError]:
        """The captures that could not be read to their end (``errors="collect"``)."""
        return [a.stats.error for a in self.report.analyses if a.failed]

    @property
    def failing(self) -> pd.DataFrame:
        """The rows of ``findings`` at or above ``fail_on``."""
        findings = self.findings
        return findings[findings["severity"] >= self.fail_on].reset_index(drop=True)

    # -- tables (built by traceaudit.frames) ---------------------------------------------------
    @cached_property
    def captures(self) -> pd.DataFrame:
        """One row per capture file, the JSON report's capture entries: ``capture`` (its
        path), ``format``, ``link_types``, ``packets`` (every frame), ``tcp_packets``,
        ``connections`` (counts as nullable integers), ``first_ts``, ``last_ts``, ``warnings``
        (a list), ``error`` (why it could not be read to its end; missing when it was)."""
        from traceaudit.frames import captures_frame
        return captures_frame(self.report.analyses)

    @cached_property
    def flows(self) -> pd.DataFrame:
        """One row per TCP connection. ``id`` numbers connections per capture as Wireshark's
        ``tcp.stream``; the columns are ``traceaudit.flows.table.FLOW_COLUMNS`` and
        ``traceaudit.tracking.connections.TRACKING_COLUMNS`` (documented there), then the
        tracker's connection facts (``ConnFacts`` in ``tracking/facts.pxd``): ``close_frame``,
        ``close_ns``, ``synack_seen``, ``refused``, ``rst_accepted``, ``tw_recycled_frame``,
        ``prev`` (the id of the 4-tuple's previous connection, -1 none),
        ``prev_in_time_wait``."""
        from traceaudit.frames import flows_frame
        return flows_frame(self.report.analyses)

    @cached_property
    def endpoints(self) -> pd.DataFrame:
        """One row per endpoint of each connection (the client's row, then the server's):
        ``capture``, ``connection`` (the flows' ``id``), ``endpoint`` (``client`` or
        ``server``), ``ip``, ``port``, ``final_state`` (its state when the capture ended,
        corrected with hindsight, as every report shows it), the connection's ``close_role``
        and ``close_kind``, then every fact the tracker established about it, by the names
        the rules read (``EndpointFacts`` in ``tracking/facts.pxd``): frames are capture frame
        numbers (-1: none), ``*_ns`` times epoch nanoseconds (0: never), ``state`` (the
        tracker's own last state, before the timeline's hindsight corrections) and
        ``rst_from_state`` (its state before its first RST; UNSEEN when it sent none, or
        nothing before it) are state names, ``hindsight`` and ``rst_answers_kind`` are bit
        sets (``tracking.states.Hindsight``, ``Answered``)."""
        from traceaudit.frames import endpoints_frame
        return endpoints_frame(self.report.analyses)

    @cached_property
    def timelines(self) -> pd.DataFrame:
        """One row per state transition of each endpoint, sorted by connection, endpoint and
        time: ``capture``, ``connection``, ``endpoint``, ``ts_ns`` (epoch nanoseconds, exact),
        ``frame`` (-1 where no packet made it, e.g. TIME_WAIT expiring), ``state`` (the state
        entered), ``reason`` (``tracking.states.Reason`` name) and ``why`` (in words, as the
        JSON report writes it). Hindsight corrections are applied (``tracking/timeline.py``)."""
        from traceaudit.frames import timelines_frame
        return timelines_frame(self.report.analyses)

    @cached_property
    def findings(self) -> pd.DataFrame:
        """One row per finding (not those a baseline accepted), ordered by capture, then time
        and rule: ``capture``, ``code``, ``rule``, ``severity`` (an ordered categorical:
        ``findings[findings.severity >= "warning"]``), ``connection`` (the flows' ``id``;
        missing for host-level findings, which name a ``host``), ``endpoint`` (the one at
        fault), ``ts`` (epoch seconds), ``frames`` (a list), ``message``, ``remediation``,
        ``display_filter`` (Wireshark), ``fingerprint``, then each rule's own fields
        (``cause``, ``confidence``, ``duration_s``, ...; missing where a rule has none):
        the JSON report's finding entries as a table."""
        from traceaudit.frames import findings_frame
        return findings_frame(self.report.analyses, self.report.findings)

    @cached_property
    def suppressed(self) -> pd.DataFrame:
        """Findings the baseline accepted (``baseline=``), with ``findings``' columns."""
        from traceaudit.frames import findings_frame
        return findings_frame(self.report.analyses, self.report.suppressed)

    @cached_property
    def zeek(self) -> pd.DataFrame:
        """One row per connection as Zeek would log it in conn.log (Zeek splits 4-tuples its
        own way, so its rows need not match ``flows``'): the columns of
        ``traceaudit.tracking.zeek.ZEEK_ROW_COLUMNS`` (documented there), after ``capture``."""
        from traceaudit.frames import zeek_frame
        return zeek_frame(self.report.analyses)

    # -- reports -------------------------------------------------------------------------------
    def to_json(self, path: PathLike) -> None:
        """Write the JSON report (as ``traceaudit analyze --json``; ``"-"``: standard
        output)."""
        self._write(json=path)

    def to_html(self, path: PathLike) -> None:
        """Write the self-contained HTML report (as ``--html``)."""
        self._write(html=path)

    def to_junit(self, path: PathLike) -> None:
        """Write JUnit XML (as ``--junit``)."""
        self._write(junit=path)

    def to_sarif(self, path: PathLike) -> None:
        """Write SARIF 2.1.0 (as ``--sarif``)."""
        self._write(sarif=path)

    def _write(self, **target: PathLike) -> None:
        from traceaudit.audit import write_reports
        write_reports(self.report, **{k: os.fspath(v) for k, v in target.items()})
