"""Command line: thin click commands over the pipeline; the only place exit codes are decided.

Exit codes: 0 = clean, 1 = findings at or above --fail-on, 2 = usage, configuration or
unreadable input (any capture that could not be read to its end).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

import click
import pandas as pd

from traceaudit import __version__
from traceaudit.capture import READERS, expand_paths
from traceaudit.errors import TraceauditError
from traceaudit.pipeline import CaptureAnalysis, ReadOptions, analyze_captures, empty_flow_table
from traceaudit.report import flows as flow_report
from traceaudit.report import json_report, states_report, summary_report
from traceaudit.report.output import write_output
from traceaudit.tracking.tracker import TrackerConfig

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _err(message: str) -> None:
    click.echo(f"traceaudit: {message}", err=True)


def reader_options(func):
    """--reader and --verify-checksums, shared by every command that reads captures."""
    func = click.option("--verify-checksums", is_flag=True,
                        help="Drop TCP segments whose checksum is wrong (as Zeek does without "
                             "-C). Off by default: captures taken on a sending host carry "
                             "offloaded, 'wrong' checksums.")(func)
    func = click.option("--reader", type=click.Choice(READERS), default="native",
                        show_default=True,
                        help="Capture reader: the built-in streaming reader, or tshark via "
                             "pyshark (slow; for formats the built-in reader does not know).")(func)
    return func


def read_captures(paths: tuple[str, ...], reader: str, verify_checksums: bool,
                  tracker: TrackerConfig = TrackerConfig()
                  ) -> tuple[list[CaptureAnalysis], bool]:
    """Analyse every capture; report damage on stderr. Returns (analyses, any capture failed)."""
    files = expand_paths(list(paths))
    if not files:
        raise click.UsageError("no capture files found in the given paths")
    options = ReadOptions(reader=reader, verify_checksums=verify_checksums, tracker=tracker)
    results, failed = [], False
    for analysis in analyze_captures(files, options):
        for warning in analysis.stats.warnings:
            if analysis.stats.error is None or str(analysis.stats.error) not in warning:
                _err(f"warning: {analysis.stats.path}: {warning}")
        if analysis.stats.error is not None:
            failed = True
            kept = analysis.stats.packets
            tail = f" (kept {kept} packet(s) read before it)" if kept else ""
            _err(f"error: {analysis.stats.error}{tail}")
        results.append(analysis)
    return results, failed


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="traceaudit")
def main() -> None:
    """traceaudit: how every TCP connection in a capture ended, and which endings are bugs."""


@main.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(flow_report.FORMATS), default="table",
              show_default=True, help="Output format.")
@click.option("-o", "--output", default="-", show_default=True,
              help="Write to this file (written atomically); '-' is standard output.")
@reader_options
def flows(captures: tuple[str, ...], fmt: str, output: str, reader: str,
          verify_checksums: bool) -> None:
    """List every TCP connection in CAPTURES (files or directories), one row each.

    \b
    Examples:
      traceaudit flows sample_pcaps/
      traceaudit flows ring-*.pcapng --format csv -o flows.csv
      traceaudit flows big.pcap.gz --format parquet -o flows.parquet
    """
    try:
        results, failed = read_captures(captures, reader, verify_checksums)
        tables = [r.flows for r in results if len(r.flows)]
        table = pd.concat(tables, ignore_index=True) if tables else empty_flow_table()
        if fmt == "parquet" and output == "-":
            raise click.UsageError("--format parquet needs -o FILE")
        write_output(output, flow_report.RENDERERS[fmt](table))
    except TraceauditError as exc:
        _err(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_ERROR if failed else EXIT_CLEAN)


def _tracker_config(msl2: float, fin_timeout: float) -> TrackerConfig:
    return TrackerConfig(msl2_s=msl2, fin_timeout_s=fin_timeout)


def tracker_options(func):
    func = click.option("--fin-timeout", type=float, default=60.0, show_default=True,
                        help="Seconds an orphaned FIN_WAIT_2 socket lives (Linux "
                             "tcp_fin_timeout); used only when an RST proves it expired.")(func)
    func = click.option("--msl2", type=float, default=60.0, show_default=True,
                        help="TIME_WAIT length in seconds (2×MSL; Linux: 60).")(func)
    return func


@main.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path())
@click.option("--json", "json_path", default=None,
              help="Write the JSON report (captures, connections with timelines, findings).")
@reader_options
@tracker_options
def analyze(captures: tuple[str, ...], json_path: str | None, reader: str,
            verify_checksums: bool, msl2: float, fin_timeout: float) -> None:
    """Infer how every TCP connection in CAPTURES ended.

    \b
    Examples:
      traceaudit analyze sample_pcaps/
      traceaudit analyze incident.pcapng --json reports/incident.json
    """
    try:
        results, failed = read_captures(captures, reader, verify_checksums,
                                        _tracker_config(msl2, fin_timeout))
        if json_path:
            write_output(json_path, json_report.render(results, tool_version=__version__))
        click.echo(summary_report.render(results), nl=False)
    except TraceauditError as exc:
        _err(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_ERROR if failed else EXIT_CLEAN)


@main.command()
@click.argument("capture", type=click.Path())
@click.option("--at", "at", required=True,
              help="Seconds since the capture's first packet (e.g. 3.5), an epoch timestamp "
                   "(e.g. 1700000003.2) or an ISO time (e.g. 2026-11-21T12:00:03Z).")
@click.option("--all", "show_all", is_flag=True, help="Also list endpoints already CLOSED.")
@reader_options
@tracker_options
def states(capture: str, at: str, show_all: bool, reader: str, verify_checksums: bool,
           msl2: float, fin_timeout: float) -> None:
    """Every endpoint's TCP state at one moment, like netstat on both hosts at once.

    \b
    Examples:
      traceaudit states capture.pcap --at 2.5
      traceaudit states capture.pcap --at 2026-11-21T12:00:03Z
    """
    try:
        results, failed = read_captures((capture,), reader, verify_checksums,
                                        _tracker_config(msl2, fin_timeout))
        for analysis in results:
            ts_ns = parse_moment(at, analysis.stats.first_ts_ns)
            click.echo(states_report.render(analysis, ts_ns, show_all), nl=False)
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


if __name__ == "__main__":
    main()
