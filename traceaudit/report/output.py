"""The one place reports touch files: ``-`` is stdout; everything else is written atomically."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from traceaudit.errors import TraceauditError


class OutputError(TraceauditError):
    slug = "output"


def write_output(target: str | Path, data: str | bytes | Iterable[bytes]) -> None:
    """Write ``data`` to ``target`` (``-`` = stdout) via a temporary file and a rename.

    ``data`` may also be an iterable of bytes pieces (a streaming renderer): they are written
    as they come, so the whole text is never held in memory; if producing a piece fails, the
    temporary file is removed as for any other failure.
    """
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        payload = data.encode() if isinstance(data, str) else data
        if str(target) == "-":
            sys.stdout.buffer.write(payload)
            sys.stdout.flush()
            return
        write_with(target, lambda tmp: Path(tmp).write_bytes(payload))
        return
    if str(target) == "-":
        for piece in data:
            sys.stdout.buffer.write(piece)
        sys.stdout.flush()
        return
    write_with(target, lambda tmp: _write_pieces(tmp, data))


def _write_pieces(path: str, pieces: Iterable[bytes]) -> None:
    with open(path, "wb") as f:
        f.writelines(pieces)


def write_with(target: str | Path, writer: Callable[[str], object]) -> None:
    """Let ``writer`` fill a temporary file beside ``target``, then rename it into place.

    A failure leaves no half-written file behind (the temporary file is removed).
    """
    path = Path(target)
    if str(path) in ("/dev/null", os.devnull) or (path.exists() and not path.is_file()):
        writer(str(path))
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)        # mkstemp makes 0600; a report is an ordinary file
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        writer(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
