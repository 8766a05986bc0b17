"""Command line: thin click commands over the pipeline; the only place exit codes are decided.

Exit codes: 0 = clean, 1 = findings at or above --fail-on, 2 = usage, configuration or
unreadable input (any capture that could not be read to its end).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pandas as pd

from traceaudit import __version__
from traceaudit.capture import READERS, expand_paths
from traceaudit.errors import TraceauditError
from traceaudit.pipeline import CaptureAnalysis, ReadOptions, analyze_captures, empty_flow_table
from traceaudit.report import flows as flow_report
from traceaudit.report.output import write_output

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


def read_captures(paths: tuple[str, ...], reader: str, verify_checksums: bool
                  ) -> tuple[list[CaptureAnalysis], bool]:
    """Analyse every capture; report damage on stderr. Returns (analyses, any capture failed)."""
    files = expand_paths(list(paths))
    if not files:
        raise click.UsageError("no capture files found in the given paths")
    options = ReadOptions(reader=reader, verify_checksums=verify_checksums)
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
        try:
            data = flow_report.RENDERERS[fmt](table)
        except ImportError:
            raise click.UsageError("--format parquet needs pyarrow: pip install "
                                   "'traceaudit[parquet]'") from None
        write_output(output, data)
    except TraceauditError as exc:
        _err(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_ERROR if failed else EXIT_CLEAN)


if __name__ == "__main__":
    main()
