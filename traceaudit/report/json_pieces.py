"""A capture's part of the JSON report, rendered where the capture was read (``--jobs``).

With several readers, the JSON report's text (its connections with their timelines, ~85 MB
for 50,000 connections, and its findings) is the part of a batch that one process would
otherwise write alone after every read: 1.4 s of 5.8 for 8 such captures. Each reader
renders its capture's part as soon as the rules have run: the connection entries go to a
file of the run's directory (on disk: they are as large as the report), the findings' JSON
objects stay as one block of text. ``json_report.render_chunks`` then copies them, in the
report's order, byte for byte what it would have written from the analysis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

from traceaudit.errors import disk_full

if TYPE_CHECKING:
    from traceaudit.pipeline import CaptureAnalysis

#: bytes read at a time when the connection entries are copied into the report
COPY_BYTES = 1 << 20


@dataclass
class RenderedJson:
    """One capture's connection entries (a file; "" when it has none) and findings (their
    JSON objects, comma-separated, in report order), as the JSON report writes them."""

    rows_path: str
    findings: bytes
    finding_count: int

    def rows(self) -> Iterator[bytes]:
        """The connection entries (comma-separated), read once: the file goes after."""
        if not self.rows_path:
            return
        try:
            with open(self.rows_path, "rb") as f:
                while block := f.read(COPY_BYTES):
                    yield block
        finally:
            try:
                os.unlink(self.rows_path)
            except FileNotFoundError:
                pass


def rendered(analysis: CaptureAnalysis, findings: Sequence,
             directory: str) -> RenderedJson | None:
    """``analysis``' connection entries and its ``findings`` as the JSON report writes them;
    the entries in a new file of ``directory``. None when that disk is full (or over quota):
    the report then renders this capture's part itself, from the analysis."""
    import tempfile

    from traceaudit.report.json_report import connection_text, finding_text
    rows_path = ""
    pieces = connection_text(analysis)
    first = next(pieces, None)
    if first is not None:
        fd, rows_path = tempfile.mkstemp(prefix="rows-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(first)
                out.writelines(pieces)
        except OSError as exc:
            os.unlink(rows_path)
            if disk_full(exc):
                return None
            raise
    text = b"".join(finding_text(f.to_dict() for f in findings))
    return RenderedJson(rows_path, text, len(findings))
