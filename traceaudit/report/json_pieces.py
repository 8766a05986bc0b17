"""A capture's part of the JSON report, rendered where the capture was read (``--jobs``).

With several readers, the JSON report's text (its connections with their timelines, ~85 MB
for 50,000 connections, and its findings) is the part of a batch that one process would
otherwise write alone after every read: 1.4 s of 5.8 for 8 such captures. Each reader
renders its capture's part as soon as the rules have run: the connection entries and the
findings' JSON objects go to two files of the run's directory (on disk: they are as large as
the report). ``json_report.render_chunks`` then copies them, in the report's order, byte for
byte what it would have written from the analysis.
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
    """One capture's connection entries and findings (their JSON objects, comma-separated,
    in report order), as the JSON report writes them: each a file ("" when there are none),
    read once (``rows``, ``finding_blocks``). On disk, both: findings take ~935 bytes each as
    text (~330 MB for a 30M-packet capture), which a reader had held in memory until the
    report was written."""

    rows_path: str
    findings_path: str
    finding_count: int

    def rows(self) -> Iterator[bytes]:
        """The connection entries (comma-separated), read once: the file goes after."""
        return _read_once(self.rows_path)

    def finding_blocks(self) -> Iterator[bytes]:
        """The findings' JSON objects (comma-separated), read once: the file goes after."""
        return _read_once(self.findings_path)


def _read_once(path: str) -> Iterator[bytes]:
    if not path:
        return
    try:
        with open(path, "rb") as f:
            while block := f.read(COPY_BYTES):
                yield block
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def rendered(analysis: CaptureAnalysis, findings: Sequence,
             directory: str) -> RenderedJson | None:
    """``analysis``' connection entries and its ``findings`` as the JSON report writes them,
    each in a new file of ``directory``. None when that disk is full (or over quota): the
    report then renders this capture's part itself, from the analysis."""
    from traceaudit.report.json_report import connection_text, finding_text
    written = []
    try:
        for pieces in (connection_text(analysis),
                       finding_text(f.to_dict() for f in findings)):
            written.append(written_to(directory, pieces))
    except OSError as exc:
        for path in written:
            if path:
                os.unlink(path)
        if disk_full(exc):
            return None
        raise
    return RenderedJson(written[0], written[1], len(findings))


def written_to(directory: str, pieces: Iterator[bytes]) -> str:
    """``pieces`` written to a new file of ``directory``: its path ("" when there are none, no
    file); a failure leaves no file."""
    import tempfile
    first = next(pieces, None)
    if first is None or not len(first):
        return ""
    fd, path = tempfile.mkstemp(prefix="part-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(first)
            out.writelines(pieces)
    except BaseException:
        os.unlink(path)
        raise
    return path
