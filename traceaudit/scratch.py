"""A run's private scratch directories (the workers' results, the JSON report's parts), and
the removal of those a killed run left behind.

A run removes its directories when it ends, also on Ctrl-C and SIGTERM (``cli.run``). A run
killed outright (SIGKILL, the out-of-memory killer) cannot: its directory would stay, in
``/dev/shm`` holding memory until the next boot. So each directory holds a lock file, locked
(``flock``) while its run lives; the kernel drops the lock when the process dies, however it
dies. Making a new directory first removes the same kind's directories whose lock can be
taken: their run is gone. ``flock`` also holds across PID namespaces sharing the filesystem,
where a process id would say nothing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".owner.lock"


@contextmanager
def scratch_directory(prefix: str, where: str | None = None) -> Iterator[str]:
    """A new private directory ``where`` (default: the temporary directory), named
    ``prefix...``, removed with its contents at the end; the abandoned ones of the same
    ``prefix`` there are removed first (``remove_abandoned``)."""
    remove_abandoned(prefix, where)
    path = tempfile.mkdtemp(prefix=prefix, dir=where)
    lock = None
    try:
        lock = os.open(os.path.join(path, LOCK_NAME), os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def remove_abandoned(prefix: str, where: str | None = None) -> list[str]:
    """Remove the directories ``prefix*`` in ``where`` whose lock no process holds; the paths
    removed. A directory without a lock file is left alone (its run may be creating it)."""
    removed = []
    for candidate in Path(where or tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            lock = os.open(candidate / LOCK_NAME, os.O_RDONLY)
        except OSError:                 # no lock file yet, not a directory, not ours
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:                 # held: its run is alive
            continue
        else:
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(str(candidate))
        finally:
            os.close(lock)
    return removed
