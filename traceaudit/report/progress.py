"""Progress on standard error while captures are read (only when it is a terminal)."""

from __future__ import annotations

import sys
from pathlib import Path

from traceaudit.capture import CaptureStats
from traceaudit.names import display_name

MIN_BYTES = 20 * 1024 * 1024       # below this a run is too short to need a bar


class CaptureProgress:
    """A rich progress bar over files (bytes of whole files done) with a live packet count."""

    def __init__(self, files: list[Path], force: bool = False) -> None:
        sizes = [_size(f) for f in files]
        self.enabled = force or (sys.stderr.isatty() and sum(sizes) >= MIN_BYTES)
        self.sizes = dict(zip(map(str, files), sizes))
        self.total = sum(sizes)
        self.done_bytes = 0
        self._bar = None

    def __enter__(self) -> "CaptureProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, Progress, TextColumn,
                                       TimeElapsedColumn)
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[packets]:>12,} packets"),
                                 TimeElapsedColumn(),
                                 console=Console(file=sys.stderr), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("reading", total=self.total or 1, packets=0)
            self._packets_before = 0
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, stats: CaptureStats) -> None:
        if self._bar is None:
            return
        name = display_name(Path(stats.path).name)
        self._bar.update(self._task, description=f"reading {name}",
                         packets=self._packets_before + stats.packets)

    def finished(self, stats: CaptureStats) -> None:
        if self._bar is None:
            return
        self._packets_before += stats.packets
        # (a rotated set read as one timeline: each of its files)
        self.done_bytes += sum(self.sizes.get(p.path, 0) for p in stats.parts or [stats])
        self._bar.update(self._task, completed=self.done_bytes, packets=self._packets_before)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
