"""The temporary files of a flat read (``spill``, ``excerpt_spill``), and how they cross to
another process.

A flat read keeps its connections in unlinked temporary files. In a worker process
(``hand_over_in``) they are named files in the run's spill directory instead (on disk: a
large capture's spill is hundreds of MB). Pickled (the worker's results going back), such a
file gives only a second name of itself there; the receiving process opens that and removes
it, so the file is then its own unlinked temporary file, gone when it closes it. The worker's
name goes when the worker closes its file. A run killed meanwhile leaves them in its spill
directory, which the next run removes (``scratch``). A file of a process that hands nothing
over crosses as its bytes.
"""

from __future__ import annotations

import itertools
import os
import tempfile

_directory: str | None = None
_names = itertools.count()


def hand_over_in(directory: str | None) -> None:
    """In a worker: the flat reads' files are made in ``directory`` (None: unnamed again)."""
    global _directory
    _directory = directory


def new_file(prefix: str):
    """A temporary file for a spill: unnamed, or named in the hand-over directory."""
    if _directory is None:
        return tempfile.TemporaryFile(prefix=prefix)
    return tempfile.NamedTemporaryFile(prefix=prefix, dir=_directory)


def sent(file, size: int) -> str | bytes:
    """How ``file`` (its first ``size`` bytes) crosses to another process: a second name of
    it in the hand-over directory, or its bytes."""
    name = getattr(file, "name", None)
    if _directory is not None and isinstance(name, str):
        file.flush()
        second = os.path.join(_directory, f"handed-{os.getpid()}-{next(_names)}")
        try:
            os.link(name, second)
            return second
        except OSError:             # a file system without hard links: the bytes, then
            pass
    file.seek(0)
    return file.read(size)


def received(what: str | bytes, prefix: str):
    """The file ``sent`` gave, as a temporary file of this process."""
    if isinstance(what, str):
        file = open(what, "r+b")
        os.unlink(what)
        return file
    file = tempfile.TemporaryFile(prefix=prefix)
    file.write(what)
    return file
