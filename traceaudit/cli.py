"""Command line: thin click commands over the pipeline; library code never exits, the commands
here do (``analyze`` with its report's ``exit_code``, ``audit.py``).

Exit codes: 0 = clean, 1 = findings at or above --fail-on (unless --exit-zero or
--write-baseline accepts them), 2 = usage, configuration or unreadable input (any capture that
could not be read to its end).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import sys
import traceback
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from itertools import islice
from typing import TYPE_CHECKING, Callable

import click

from traceaudit import __version__, stopping
from traceaudit.capture import READERS, group_captures, scan_paths
from traceaudit.errors import CaptureBug, TraceauditError
from traceaudit.names import one_line
from traceaudit.pipeline import CaptureAnalysis, ReadOptions
from traceaudit.report import flows as flow_report
from traceaudit.report.output import write_output
from traceaudit.retire import RetireOptions
from traceaudit.tracking.tracker import TrackerConfig

from traceaudit.audit import EXIT_CLEAN, EXIT_ERROR

if TYPE_CHECKING:
    from traceaudit.parallel.steps import Step

DEBUG_ENV = "TRACEAUDIT_DEBUG"     # set: a bug's traceback is printed after its message


def _err(message: str) -> None:
    """One line on standard error (control characters and undecodable bytes escaped)."""
    click.echo(f"traceaudit: {one_line(message)}", err=True)


def _debug_details(text: str) -> None:
    """A bug's traceback, on standard error when TRACEAUDIT_DEBUG is set."""
    if os.environ.get(DEBUG_ENV):
        click.echo(text.rstrip("\n"), err=True)
    else:
        _err(f"(set {DEBUG_ENV}=1 for the traceback)")


def reader_options(func):
    """--reader, --verify-checksums and --merge/--no-merge, shared by every command that
    reads captures."""
    func = click.option("--merge/--no-merge", "merge", default=None,
                        help="Read every capture given as one timeline (--merge: in order of "
                             "first packet), or each file on its own (--no-merge). Default: "
                             "rotated pieces of one capture (tcpdump -C/-W/-G, dumpcap ring "
                             "buffers, editcap splits) are found by name and time and read "
                             "as one.")(func)
    func = click.option("--verify-checksums", is_flag=True,
                        help="Drop TCP segments whose checksum is wrong (as Zeek does without "
                             "-C). Off by default: captures taken on a sending host carry "
                             "offloaded, 'wrong' checksums.")(func)
    func = click.option("--reader", type=click.Choice(READERS), default="native",
                        show_default=True,
                        help="Capture reader: the built-in streaming reader, or tshark via "
                             "pyshark (slow; for formats the built-in reader does not know).")(func)
    return func


# -- parallel reading (issue #18: --jobs, --scheduler; traceaudit.parallel) ----------------
def parallel_options(func):
    """--jobs and --scheduler, shared by analyze, flows and states."""
    func = click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        envvar="TRACEAUDIT_SCHEDULER", show_envvar=True,
                        help="Read the captures on this Dask distributed cluster (its workers "
                             "must see the same paths); needs the cluster extra.")(func)
    func = click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
                        help="Captures (or rotated sets) read side by side: this process "
                             "and N-1 worker processes; 1 reads them one after another in this "
                             "process, on one core. Outputs are the same either way.  "
                             "[default: the cores this process may use, when the captures "
                             "make 64 MiB or more]")(func)
    return func


# -------------------------------------------------------------------------------------------


def read_captures(paths: tuple[str, ...], reader: str, verify_checksums: bool,
                  tracker: TrackerConfig = TrackerConfig(),
                  each: "Step | None" = None,
                  excerpts: bool = False,
                  frames: bool = True,
                  retire: bool | RetireOptions = False,
                  merge: bool | None = None,
                  skipped: list | None = None,
                  findings: list | None = None,
                  jobs: int | None = 1,
                  scheduler: str | None = None) -> tuple[list[CaptureAnalysis], bool]:
    """Analyse every capture; report damage on stderr. Returns (analyses, any capture failed).

    ``each`` (a ``parallel.steps`` step) sees every analysis as soon as it is complete (and
    may slim it down) where it was read, before that worker reads its next capture; the
    findings it returns go to ``findings``. ``jobs``/``scheduler``: where captures are read
    (``parallel.read_units``). ``excerpts``: keep packets for ladder diagrams (only HTML
    draws them).
    ``frames``: the caller will use the DataFrames (pandas is imported while reading).
    ``retire``: only the flow table is wanted; it is spilled as connections finish (given as
    ``RetireOptions``: those; ``analyze``'s flat read spills their facts and timelines too).
    ``merge``: rotated sets as one timeline (None: found by name and time; see
    ``capture.sets``). ``skipped`` (a list) receives the files of directories that are not
    captures, for the caller to list; without it they are named on stderr.
    """
    scan = scan_paths(_stdin_as_path(paths))
    if skipped is not None:
        skipped.extend(str(p) for p in scan.skipped)
    elif scan.skipped:
        _err(f"note: not a capture, skipped: {_listed(scan.skipped)}")
    files = scan.files
    if not files:
        raise click.UsageError("no capture files found in the given paths")
    from traceaudit.parallel import read_units
    from traceaudit.report.progress import CaptureProgress

    options = ReadOptions(reader=reader, verify_checksums=verify_checksums, tracker=tracker,
                          excerpts=excerpts, frames_soon=frames,
                          retire=retire if isinstance(retire, RetireOptions)
                          else RetireOptions() if retire else None)
    results, failed = [], False
    with CaptureProgress(files) as progress:
        for done in read_units(group_captures(files, merge), options, each, jobs=jobs,
                               scheduler=scheduler, progress=progress.update):
            analysis = done.analysis
            progress.finished(analysis.stats)
            if findings is not None:
                # one entry a capture: a list, or a flat read's parked findings
                findings.append(done.findings)
            _reported(analysis)
            results.append(analysis)
            failed = failed or analysis.stats.error is not None
    stopping.check()            # no report from a run stopped as its last capture ended
    return results, failed


#: ``analyze``'s flat read: connections spilled with their facts and timelines, the rules and
#: reports read them back a chunk at a time (``retire/flat.py``). It costs about a third more
#: CPU than keeping everything, so by default only a capture whose whole read would peak
#: over ~600 MB is read so (``--spill`` forces it): from FLAT_MIN_BYTES (the whole read
#: peaks at ~1.15x the file: 3M packets, 350 MB, 403 MB), or with --html, which also keeps
#: packet excerpts and frames (~1.6x), from FLAT_HTML_MIN_BYTES.
FLAT_MIN_BYTES = 512 << 20
FLAT_HTML_MIN_BYTES = 256 << 20
FLAT_READ = RetireOptions(facts=True, min_bytes=FLAT_MIN_BYTES)
#: ``states`` reads flat from 256 MiB: there it is the faster read too (its table is made a
#: chunk at a time; 3M packets: 1.2-1.8 s and 244 MB against 2.0-2.5 s and 408 MB)
STATES_FLAT_READ = RetireOptions(facts=True, min_bytes=256 << 20)


def _flat_read(spill: bool | None, html: bool = False) -> RetireOptions | bool:
    """``analyze --spill/--no-spill``: the flat read always, never, or from FLAT_MIN_BYTES
    (FLAT_HTML_MIN_BYTES with ``html``)."""
    if spill is None:
        return dataclasses.replace(FLAT_READ, min_bytes=min(FLAT_READ.min_bytes,
                                                            FLAT_HTML_MIN_BYTES)) if html \
            else FLAT_READ
    return dataclasses.replace(FLAT_READ, min_bytes=0) if spill else False

#: the capture read for ``-``: a pipe into standard input, read once, never seeked or re-read
STDIN_PATH = "/dev/stdin"


def _stdin_as_path(paths: tuple[str, ...]) -> list[str]:
    """``-`` names standard input (at most once; not a terminal: a capture must be piped in)."""
    if paths.count("-") > 1:
        raise click.UsageError("'-' (standard input) can be given only once")
    if "-" in paths and sys.stdin is not None and sys.stdin.isatty():
        raise click.UsageError("'-' reads a capture from standard input, which is a terminal: "
                               "pipe one in (e.g. tcpdump -w - | traceaudit analyze -)")
    return [STDIN_PATH if p == "-" else p for p in paths]


def _listed(paths: list, shown: int = 5) -> str:
    names = ", ".join(str(p) for p in paths[:shown])
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return names + more


def _reported(analysis: CaptureAnalysis) -> CaptureAnalysis:
    """Say on stderr what went wrong with a capture (warnings, damage); return it unchanged."""
    for warning in analysis.stats.warnings:
        if analysis.stats.error is None or str(analysis.stats.error) not in warning:
            _err(f"warning: {analysis.stats.path}: {warning}")
    if analysis.stats.error is not None:
        kept = analysis.stats.packets
        tail = f" (kept {kept} packet(s) read before it)" if kept else ""
        _err(f"error: {analysis.stats.error}{tail}")
        if isinstance(analysis.stats.error, CaptureBug):
            _debug_details(analysis.stats.error.details)
    return analysis


class _Commands(click.Group):
    """The command group; an exception nothing else caught (a bug) is one error line and exit
    2, never a traceback and exit 1 (which CI would read as findings)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort):
            raise
        except Exception as exc:
            _internal_error(f"in traceaudit {ctx.invoked_subcommand}", exc)
            sys.exit(EXIT_ERROR)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="traceaudit")
def main() -> None:
    """traceaudit: how every TCP connection in a capture ended, and which endings are bugs."""
    # A run builds hundreds of thousands of long-lived objects (findings, report rows) and
    # almost no reference cycles: automatic generational collection only costs time (0.3 s of
    # 3.5 s on 3M packets). An analysis forms no cycle (its memory goes with the last
    # reference to it); a failed capture's are collected (``parallel.units.collect_if_failed``),
    # and what the imports built is frozen out of that collection.
    gc.disable()
    gc.freeze()


@main.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(flow_report.FORMATS), default="table",
              show_default=True,
              help="Output format. zeek: a conn.log as Zeek's ASCII writer writes it, one row "
                   "per connection as Zeek splits them (zeek-cut reads it); zeek-json: the "
                   "same as Zeek's JSON log. Their last column, tcp_stream, is not Zeek's: "
                   "the connection id (Wireshark's tcp.stream) of the row's first packet. "
                   "One log per capture; see docs/zeek-compat.md.")
@click.option("-o", "--output", default="-", show_default=True,
              help="Write to this file (written atomically); '-' is standard output.")
@reader_options
@parallel_options
def flows(captures: tuple[str, ...], fmt: str, output: str, reader: str,
          verify_checksums: bool, merge: bool | None, jobs: int | None,
          scheduler: str | None) -> None:
    """List every TCP connection in CAPTURES (files or directories; '-' is standard
    input), one row each.

    \b
    Examples:
      traceaudit flows sample_pcaps/
      traceaudit flows ring-*.pcapng --format csv -o flows.csv
      traceaudit flows big.pcap.gz --format parquet -o flows.parquet
      traceaudit flows capture.pcap --format zeek -o conn.log
    """
    try:
        # only the flow tables are kept: each capture's tracker tables go as soon as it is read
        if fmt == "parquet" and output == "-":
            raise click.UsageError("--format parquet needs -o FILE")
        # CSV and Parquet are written from the arrays, pandas is not needed for them, and
        # finished connections are spilled while reading (memory follows the open ones)
        streamed = fmt in ("csv", "parquet")
        if fmt in flow_report.ZEEK_FORMATS:
            failed = _zeek_log(captures, fmt, output, reader, verify_checksums, merge,
                               jobs, scheduler)
            sys.exit(EXIT_ERROR if failed else EXIT_CLEAN)
        from traceaudit.parallel.steps import FlowsOnly
        results, failed = read_captures(captures, reader, verify_checksums, each=FlowsOnly(),
                                        frames=not streamed, retire=streamed, merge=merge,
                                        jobs=jobs, scheduler=scheduler)
        tables = [r.table for r in results if len(r.table)]
        try:
            write_output(output, flow_report.RENDERERS[fmt](tables))
        finally:
            for r in results:
                if hasattr(r.table, "close"):
                    r.table.close()
    except TraceauditError as exc:
        _err(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_ERROR if failed else EXIT_CLEAN)


def _zeek_log(captures: tuple[str, ...], fmt: str, output: str, reader: str,
              verify_checksums: bool, merge: bool | None, jobs: int | None,
              scheduler: str | None) -> bool:
    """``flows --format zeek|zeek-json``: Zeek's rows of every capture, one log each (the
    whole read is kept: Zeek's rows are not retired while reading). Returns: a capture
    failed."""
    from traceaudit.parallel.steps import ZeekOnly
    from traceaudit.report import zeeklog
    results, failed = read_captures(captures, reader, verify_checksums, each=ZeekOnly(),
                                    frames=False, merge=merge, jobs=jobs, scheduler=scheduler)
    now = datetime.now(timezone.utc)
    logs = [zeeklog.ZeekLog(str(r.stats.path), r.zeek_table, now) for r in results
            if r.zeek_table is not None and len(r.zeek_table)]
    render = zeeklog.render_tsv if fmt == "zeek" else zeeklog.render_json
    write_output(output, render(logs))
    return failed


def _tracker_config(msl2: float, fin_timeout: float) -> TrackerConfig:
    return TrackerConfig(msl2_s=msl2, fin_timeout_s=fin_timeout)


def tracker_options(func):
    func = click.option("--fin-timeout", type=float, default=60.0, show_default=True,
                        help="Seconds an orphaned FIN_WAIT_2 socket lives (Linux "
                             "tcp_fin_timeout); used only when an RST proves it expired.")(func)
    func = click.option("--msl2", type=float, default=60.0, show_default=True,
                        help="TIME_WAIT length in seconds (2×MSL; Linux: 60).")(func)
    return func


def _complete_rules(ctx, param, incomplete: str) -> list:
    """Shell completion of rule names and codes (the part after the last comma)."""
    from click.shell_completion import CompletionItem

    from traceaudit.rules import registry
    head, _, last = incomplete.rpartition(",")
    prefix = head + "," if head else ""
    return [CompletionItem(prefix + word, help=r.title)
            for r in registry().values() for word in (r.code, r.name)
            if word.lower().startswith(last.lower())]


def _rule_list(values: tuple[str, ...], option: str) -> list[str] | None:
    """Comma-separated and repeated --select/--ignore values (rule names, codes or code
    prefixes), validated against the registry."""
    from traceaudit.rules.config import check_rule_names
    if not values:
        return None
    return check_rule_names([n for v in values for n in v.split(",")], option)


@main.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path())
@click.option("--json", "json_path", default=None, metavar="FILE",
              help="Write the JSON report (captures, connections with timelines, findings); "
                   "'-' writes it to standard output (the summary then goes to standard "
                   "error, so the output pipes into jq).")
@click.option("--junit", "junit_path", default=None, metavar="FILE",
              help="Write JUnit XML for CI (one test suite per capture, a test per rule); '-' "
                   "is standard output.")
@click.option("--sarif", "sarif_path", default=None, metavar="FILE",
              help="Write SARIF 2.1.0 (code-scanning dashboards); '-' is standard output.")
@click.option("--html", "html_path", default=None, metavar="FILE",
              help="Write the self-contained HTML report (e.g. reports/incident.html); '-' is "
                   "standard output.")
@click.option("--output-format", "output_format", default=None,
              type=click.Choice(["github", "gitlab", "json-lines"]),
              help="Also write the findings for CI: github (workflow-command annotations), "
                   "gitlab (Code Quality JSON) or json-lines (one finding per line), to "
                   "--output-file.")
@click.option("-o", "--output-file", "output_file", default="-", show_default=True,
              metavar="FILE", help="Where --output-format writes; '-' is standard output "
                                    "(the summary then goes to standard error).")
@click.option("--select", multiple=True, metavar="RULES", shell_complete=_complete_rules,
              help="Run only these rules: names, codes (TA101) or code prefixes (TA1), "
                   "comma-separated or repeated.")
@click.option("--ignore", multiple=True, metavar="RULES", shell_complete=_complete_rules,
              help="Do not run these rules (names, codes or prefixes). When --select and "
                   "--ignore both match a rule, the more specific entry wins (a name or code "
                   "over a prefix, a longer prefix over a shorter); --ignore wins ties.")
@click.option("--fail-on", type=click.Choice(["info", "warning", "error"]), default=None,
              help="Lowest severity that makes the exit code 1  [default: warning, or the "
                   "config file's fail-on].")
@click.option("--baseline", "baseline_path", default=None, metavar="FILE",
              help="Suppress findings recorded in this baseline file (see --write-baseline).")
@click.option("--write-baseline", "write_baseline_path", default=None, metavar="FILE",
              help="Record every finding of this run as known, for later --baseline runs; "
                   "this accepts them, so the exit status is 0 (2 if a capture is "
                   "unreadable). '-' is standard output.")
@click.option("--spill/--no-spill", default=None,
              help="Keep finished connections in a temporary file as the read goes, so memory "
                   "follows the connections open at once (about a third more CPU). Default: "
                   "for captures of 512 MiB or more (256 MiB with --html) read in this "
                   "process.")
@click.option("--exit-zero", is_flag=True,
              help="Exit 0 even when there are findings at or above --fail-on (still 2 for "
                   "usage, configuration or unreadable input).")
@click.option("--config", "config_path", default=None, metavar="FILE",
              help="Settings file (default: the first traceaudit.toml, or pyproject.toml "
                   "with a [tool.traceaudit] table, in the current directory or its "
                   "parents). Paths in it are relative to its directory.")
@click.option("--set", "overrides", multiple=True, metavar="rules.NAME.KEY=VALUE",
              help="Override a rule threshold or severity (NAME: a rule name or code), e.g. "
                   "--set rules.half-closed-leak.min_duration=30 or "
                   "--set rules.TA101.severity=info.")
@reader_options
@tracker_options
@parallel_options
def analyze(captures: tuple[str, ...], json_path: str | None, junit_path: str | None,
            sarif_path: str | None, html_path: str | None, output_format: str | None,
            output_file: str, select: tuple[str, ...],
            ignore: tuple[str, ...], fail_on: str | None, baseline_path: str | None,
            write_baseline_path: str | None, exit_zero: bool, config_path: str | None,
            overrides: tuple[str, ...], reader: str, verify_checksums: bool,
            merge: bool | None, msl2: float, fin_timeout: float, jobs: int | None,
            scheduler: str | None, spill: bool | None) -> None:
    """Find how every TCP connection in CAPTURES ended, and which endings are bugs.
    CAPTURES are files or directories; '-' reads one capture from standard input.

    Exit status: 0 no finding at or above --fail-on, 1 there are, 2 usage, configuration or
    unreadable input. With --exit-zero or --write-baseline, findings never make it 1.

    Every report option (--json, --junit, --sarif, --html, --write-baseline) takes '-' for
    standard output; the terminal summary then goes to standard error.

    \b
    Examples:
      traceaudit analyze sample_pcaps/ --html reports/sample.html
      traceaudit analyze incident.pcapng --json reports/incident.json
      traceaudit analyze ci/*.pcap --junit junit.xml --fail-on error --baseline known.json
      traceaudit analyze x.pcap --select half-closed-leak --set rules.half-closed-leak.min_duration=30
      traceaudit analyze ci/ --select TA1 --ignore TA108 --sarif out.sarif --exit-zero
      traceaudit analyze ci/ --output-format github
      tcpdump -i lo -w - port 8080 | traceaudit analyze -
      traceaudit analyze ci/ --output-format gitlab -o gl-code-quality.json
    """
    import time
    from contextlib import ExitStack

    from rich.console import Console

    from traceaudit.audit import build_report
    from traceaudit.parallel.steps import Audit
    from traceaudit.rules.baseline import load_baseline, render_baseline
    from traceaudit.rules.config import make_config
    from traceaudit.scratch import scratch_directory

    started = time.monotonic()
    scratch = ExitStack()
    if output_file != "-" and not output_format:
        raise click.UsageError("-o/--output-file is where --output-format writes: "
                               "give --output-format too")
    try:
        config = make_config(config_path, select=_rule_list(select, "--select"),
                             ignore=_rule_list(ignore, "--ignore"), fail_on=fail_on,
                             overrides=overrides)
        baseline = baseline_path or config.baseline
        known = load_baseline(baseline) if baseline else None
        findings: list = []
        # rules run as each capture completes (where it was read); then only what the
        # reports read is kept, so a batch of many large captures does not hold every
        # tracker table at once
        # (with several readers each renders its captures' part of the JSON report there)
        json_dir = scratch.enter_context(scratch_directory("traceaudit-json-")) \
            if json_path else None
        audit = Audit(config, keep_excerpts=html_path is not None,
                      keep_events=json_path is not None or html_path is not None,
                      json_dir=json_dir,
                      keep_findings=any((json_path, junit_path, sarif_path, html_path,
                                         output_format, write_baseline_path, baseline)))
        skipped: list[str] = []
        # finished connections go to disk as the read goes (flat memory; with --html their
        # packet excerpts too; captures that cannot be read twice are kept whole:
        # pipeline.analyze_capture)
        results, _ = read_captures(captures, reader, verify_checksums,
                                   _tracker_config(msl2, fin_timeout), each=audit,
                                   excerpts=html_path is not None,
                                   frames=html_path is not None, merge=merge, skipped=skipped,
                                   findings=findings, jobs=jobs, scheduler=scheduler,
                                   retire=_flat_read(spill, html=html_path is not None))
        from traceaudit.retire.findings import joined
        report = build_report(results, config, known, findings=joined(findings),
                              tool_version=__version__,
                              generated_at=datetime.now(timezone.utc).isoformat(
                                  timespec="seconds").replace("+00:00", "Z"),
                              elapsed_s=time.monotonic() - started,
                              accepted_by="--write-baseline" if write_baseline_path
                              else "--exit-zero" if exit_zero else "", skipped=skipped)
        broken = _write_reports(report, json_path, junit_path, sarif_path, html_path)
        if output_format:
            broken |= _guarded(f"--output-format {output_format}", output_file,
                               lambda: write_output(output_file,
                                                    _render_ci(output_format, report)))
        if write_baseline_path:
            broken |= _guarded("--write-baseline", write_baseline_path, lambda: write_output(
                write_baseline_path,
                render_baseline(report.findings + report.suppressed, __version__)))
        from traceaudit.report import summary_report
        # a report written to standard output (`--json -`) keeps it to itself: the summary
        # goes to standard error then, so `| jq` reads one document
        piped = "-" in (json_path, junit_path, sarif_path, html_path, write_baseline_path,
                        output_file if output_format else None)
        stream = sys.stderr if piped else sys.stdout
        summary_report.render(report, Console(file=stream, highlight=False,
                                              width=None if stream.isatty() else 120))
    except TraceauditError as exc:
        _err(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    finally:
        scratch.close()
    # --write-baseline accepts today's findings; --exit-zero reports without failing
    sys.exit(EXIT_ERROR if broken else report.exit_code)


def _write_reports(report, json_path, junit_path, sarif_path, html_path) -> bool:
    """Every requested report (``audit.write_reports``), each on its own: True when one of
    them failed with a bug (the others are still written)."""
    from traceaudit.audit import write_reports
    broken = False
    for option, key, target in (("--json", "json", json_path), ("--junit", "junit", junit_path),
                                ("--sarif", "sarif", sarif_path), ("--html", "html", html_path)):
        if target:
            broken |= _guarded(option, target,
                               lambda key=key, target=target: write_reports(report,
                                                                            **{key: target}))
    return broken


def _guarded(option: str, target: str, write: Callable[[], None]) -> bool:
    """Run ``write``; an unexpected exception (a bug) is reported and True returned, so one
    failing report does not stop the others (nothing half-written: writes are atomic)."""
    try:
        write()
    except TraceauditError:
        raise
    except Exception as exc:
        _internal_error(f"writing {option} {target}", exc)
        return True
    return False


def _internal_error(doing: str, exc: BaseException) -> None:
    text = str(exc).strip()
    _err(f"error: internal error {doing}: {type(exc).__name__}{': ' + text if text else ''}"
         " — this is a bug, please report it")
    _debug_details("".join(traceback.format_exception(exc)))


def _render_ci(output_format: str, report) -> str:
    """--output-format: annotations or findings as CI services read them."""
    if output_format == "github":
        from traceaudit.report import github
        return github.render(report)
    if output_format == "gitlab":
        from traceaudit.report import gitlab
        return gitlab.render(report)
    from traceaudit.report import json_lines
    return json_lines.render(report)


@main.command()
@click.argument("capture_a", metavar="CLIENT_SIDE", type=click.Path())
@click.argument("capture_b", metavar="SERVER_SIDE", type=click.Path())
@click.option("--json", "json_path", default=None, metavar="FILE",
              help="Write the comparison as JSON (matched connections with their "
                   "translation, clock offset, unmatched connections, every packet dropped "
                   "or created with its frame, time and display filter); '-' is standard "
                   "output.")
@click.option("--html", "html_path", default=None, metavar="FILE",
              help="Write a self-contained HTML report: per connection with differences, "
                   "the ladder diagrams of both vantage points side by side.")
@click.option("--reader", type=click.Choice(READERS), default="native", show_default=True,
              help="Capture reader (as for analyze).")
def compare(capture_a: str, capture_b: str, json_path: str | None, html_path: str | None,
            reader: str) -> None:
    """Compare two captures of the same traffic taken at two points of its path (e.g. on
    either side of a router, NAT or firewall): match their connections (by ISNs, timestamps
    and payload sizes, so through address translation) and list, per connection, the
    packets dropped on the path (seen at the sender's side only) and those created on it
    (seen at the receiver's side only: a firewall's or an injector's reset).

    CLIENT_SIDE is the capture beside the connections' clients where the packets' timing
    does not tell.

    Exit status: 0 nothing dropped or created, 1 some, 2 usage or unreadable input.

    \b
    Examples:
      traceaudit compare client.pcap server.pcap
      traceaudit compare lan.pcapng wan.pcapng --html reports/path.html --json path.json
    """
    import time

    from rich.console import Console

    from traceaudit.compare import compare_captures
    from traceaudit.report import compare_summary

    started = time.monotonic()
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
    try:
        comparison = compare_captures(capture_a, capture_b, reader=reader)
        elapsed = time.monotonic() - started
        damaged = False
        for v in (comparison.a, comparison.b):
            if v.stats.error is not None:
                damaged = True
                kept = v.stats.packets
                _err(f"error: {v.stats.error}" + (f" (kept {kept} packet(s) read before it)"
                                                  if kept else ""))
        if json_path:
            from traceaudit.report import compare_json
            write_output(json_path, compare_json.render(comparison, tool_version=__version__,
                                                        generated_at=generated_at,
                                                        elapsed_s=elapsed))
        if html_path:
            from traceaudit.report import compare_html
            write_output(html_path, compare_html.render(comparison, tool_version=__version__,
                                                        generated_at=generated_at))
        stream = sys.stderr if "-" in (json_path, html_path) else sys.stdout
        compare_summary.render(comparison, Console(file=stream, highlight=False,
                                                   width=None if stream.isatty() else 120),
                               elapsed)
    except TraceauditError as exc:
        _err(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_ERROR if damaged else comparison.exit_code)


@main.command("rules")
@click.argument("name", required=False, shell_complete=_complete_rules)
@click.option("--config", "config_path", default=None, metavar="FILE",
              help="Show thresholds as configured in this settings file (default: the "
                   "one analyze would find).")
def rules_command(name: str | None, config_path: str | None) -> None:
    """List the rules, or explain one, by name or code (rationale, fix, thresholds,
    references).

    \b
    Examples:
      traceaudit rules
      traceaudit rules half-closed-leak
      traceaudit rules TA101
    """
    from traceaudit.report import rules_report
    from traceaudit.rules import registry
    from traceaudit.rules.config import load_config, resolve_rule

    try:
        config = load_config(config_path)
        if name is None:
            click.echo(rules_report.render_list(registry(), config), nl=False)
        else:
            rule = resolve_rule(name, "traceaudit rules")
            click.echo(rules_report.render_rule(rule, config), nl=False)
    except TraceauditError as exc:
        _err(f"error: {exc}")
        sys.exit(EXIT_ERROR)


@main.command()
@click.argument("capture", type=click.Path())
@click.option("--at", "at", required=True,
              help="Seconds since the capture's first packet (e.g. 3.5), an epoch timestamp "
                   "(e.g. 1700000003.2) or an ISO time (e.g. 2026-11-21T12:00:03Z).")
@click.option("--all", "show_all", is_flag=True, help="Also list endpoints already CLOSED.")
@reader_options
@tracker_options
@parallel_options
def states(capture: str, at: str, show_all: bool, reader: str, verify_checksums: bool,
           merge: bool | None, msl2: float, fin_timeout: float, jobs: int | None,
           scheduler: str | None) -> None:
    """Every endpoint's TCP state at one moment, like netstat on both hosts at once.

    \b
    Examples:
      traceaudit states capture.pcap --at 2.5
      traceaudit states capture.pcap --at 2026-11-21T12:00:03Z
    """
    try:
        # a capture of 256 MiB or more is read flat, as analyze reads it: the table is then
        # made from its connections a chunk at a time
        results, failed = read_captures((capture,), reader, verify_checksums,
                                        _tracker_config(msl2, fin_timeout), merge=merge,
                                        jobs=jobs, scheduler=scheduler,
                                        retire=STATES_FLAT_READ)
        from traceaudit.report import states_report
        for analysis in results:
            ts_ns = parse_moment(at, analysis.stats.first_ts_ns)
            lines = states_report.pieces(analysis, ts_ns, show_all, msl2_ns=int(msl2 * 1e9))
            while text := "".join(islice(lines, 4096)):
                click.echo(text, nl=False)
    except TraceauditError as exc:
        _err(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_ERROR if failed else EXIT_CLEAN)


def parse_moment(text: str, first_ts_ns: int | None) -> int:
    """--at as epoch nanoseconds: relative seconds, epoch seconds, or an ISO timestamp."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"{text!r} is neither seconds nor an ISO time",
                                     param_hint="--at") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return int(round(moment.timestamp() * 1e9))
    if value >= 100_000_000:                  # an absolute epoch timestamp
        return int(value * 1_000_000_000)
    return (first_ts_ns or 0) + int(value * 1_000_000_000)


#: signals that stop a run cleanly (``run``)
STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _terminated(signum: int, frame) -> None:
    """A signal handler: the run stops at its next safe point (``traceaudit.stopping``), or
    at once where it waits on a pipe; a third signal ends the process here."""
    first = stopping.asked() is None
    if first:
        _err(f"stopped by {signal.Signals(signum).name}")
    if stopping.ask(signum) >= 3:
        os._exit(128 + stopping.asked())


def run() -> None:
    """The console script: the command line, then an exit without the interpreter's teardown.

    Every report is complete (written atomically and closed) when a command returns; what is
    left is freeing the run's objects one by one (about 0.15 s after a 3M-packet capture),
    which the operating system does at once. Output streams are flushed first.

    SIGINT (Ctrl-C), SIGTERM (``timeout``, a CI job cancelled, ``docker stop``) and SIGHUP
    stop the run alike (``traceaudit.stopping``): one line says so, its scratch directories
    are removed, no report is left half-written, its worker processes end, and the exit
    status is 128 + the signal's number (130, 143, 129; not 1, which means findings).
    """
    for signum in STOPPING_SIGNALS:
        signal.signal(signum, _terminated)
    try:
        main()
        code = EXIT_CLEAN
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = EXIT_CLEAN
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    if stopping.asked() is not None:            # (even if the run got to its end)
        code = 128 + stopping.asked()
    if "traceaudit.parallel.runner" in sys.modules:
        from traceaudit.parallel.runner import remove_forkserver_directory
        remove_forkserver_directory()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):      # closed pipe (e.g. `| head`): nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
