"""Captures read in parallel: worker processes on this machine (``--jobs N``) or a Dask
cluster (``--scheduler``).

A *unit* is what one worker reads: a capture file or a rotated set (``capture.CaptureSet``).
Every unit goes through the same module-level function (``units.read_unit``: read, then the
command's ``steps`` step, e.g. the rules and the slimming ``analyze`` does), wherever it runs;
the results come back in input order, so every report is the one a single process writes.

One large capture may instead be split across workers by flow hash (``shares``: each worker
reads the whole file and keeps its share of the connections; the shares are merged into what
one read gives).
"""

from __future__ import annotations

from traceaudit.parallel.runner import default_jobs, read_units
from traceaudit.parallel.units import Done

__all__ = ["Done", "default_jobs", "read_units"]
