"""Progress on standard error while captures are read (only when it is a terminal)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from traceaudit.capture import CaptureStats
from traceaudit.names import display_name

MIN_BYTES = 20 * 1024 * 1024       # below this a run is too short to need a bar
REDRAW_S = 0.1                     # at most this often (rich's own refresh rate is 10/s)


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
            # redrawn by this thread as the read reports progress, not by a thread of its
            # own: while only one thread runs, --jobs forks its workers from this process
            # (``parallel.runner.worker_context``)
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[packets]:>12,} packets"),
                                 TimeElapsedColumn(), auto_refresh=False,
                                 console=Console(file=sys.stderr), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("reading", total=self.total or 1, packets=0)
            self._packets_before = 0
            self._drawn = 0.0
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
        self._redraw()

    def finished(self, stats: CaptureStats) -> None:
        if self._bar is None:
            return
        self._packets_before += stats.packets
        # (a rotated set read as one timeline: each of its files)
        self.done_bytes += sum(self.sizes.get(p.path, 0) for p in stats.parts or [stats])
        self._bar.update(self._task, completed=self.done_bytes, packets=self._packets_before)
        self._redraw(force=True)

    def _redraw(self, force: bool = False) -> None:
        """The bar drawn again, at most ``REDRAW_S`` apart unless ``force``."""
        now = time.monotonic()
        if force or now - self._drawn >= REDRAW_S:
            self._drawn = now
            self._bar.refresh()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
