"""GitHub Actions workflow commands: ``render(report) -> str``, one annotation per line.

Each reported finding (not the baseline-suppressed ones) becomes
``::error|warning|notice file=PATH,line=FRAME,title=CODE rule-name::MESSAGE`` (error, warning
and info severities; ``line`` is the first frame number, left out when the finding names no
frame), and each capture that could not be read to its end an ``::error`` titled
``traceaudit: unreadable capture``. PATH is relative to the current directory when the capture
lies below it (GitHub places annotations by repository path). As GitHub documents, ``%``,
``\\r`` and ``\\n`` in the message are escaped as ``%25``, ``%0D`` and ``%0A``, and in the
properties also ``:`` and ``,`` as ``%3A`` and ``%2C``; so every annotation is one line.
"""

from __future__ import annotations

from pathlib import Path

from traceaudit.audit import AuditReport
from traceaudit.names import display_name
from traceaudit.report.ci_common import (analyses_by_path, endpoints, first_frame_file,
                                          shown_path, subject, utf8_safe)
from traceaudit.rules.model import Finding, Severity

COMMANDS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: object) -> str:
    """A workflow command's message: ``%``, CR and LF percent-encoded."""
    return (utf8_safe(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def escape_property(text: object) -> str:
    """A workflow command's property value: as ``escape_data``, and ``:`` and ``,`` too."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **props: object) -> str:
    """One workflow command line, ``::kind key=value,...::message`` (None values left out)."""
    fields = ",".join(f"{k}={escape_property(v)}" for k, v in props.items() if v is not None)
    return f"::{kind}{' ' + fields if fields else ''}::{escape_data(message)}"


def render(report: AuditReport, cwd: str | Path | None = None) -> str:
    by_path = analyses_by_path(report)
    ends = {path: endpoints(a) for path, a in by_path.items()}
    lines = [_finding(f, ends.get(f.capture, {}), by_path.get(f.capture), cwd)
             for f in report.findings]
    for a in report.unreadable:
        lines.append(command("error", str(a.stats.error),
                             file=display_name(shown_path(a.stats.path, cwd)),
                             title="traceaudit: unreadable capture"))
    return "".join(line + "\n" for line in lines)


def _finding(f: Finding, ends: dict, analysis, cwd: str | Path | None) -> str:
    text = f"{f.message} ({subject(f, ends)})"
    if f.frames:
        text += f"\nframes: {', '.join(map(str, f.frames[:20]))}" \
                + (" …" if len(f.frames) > 20 else "")
    if "frames_in_files" in f.details:       # a rotated set: the merged capture's numbers
        text += f"\nin the files: {', '.join(f.details['frames_in_files'][:20])}"
    if f.display_filter:
        text += f"\nWireshark display filter: {f.display_filter}"
    if f.remediation:
        text += f"\nremediation: {f.remediation}"
    path, frame = first_frame_file(f, analysis)
    return command(COMMANDS[f.severity], text, file=display_name(shown_path(path, cwd)),
                   line=frame, title=f"{f.code} {f.rule}")
