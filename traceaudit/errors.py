"""Error types. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

import errno
import os
import traceback


class TraceauditError(Exception):
    """Base error; ``slug`` names the kind of problem for docs and tests."""

    slug = "error"

    def __init__(self, message: str, *, slug: str | None = None) -> None:
        super().__init__(message)
        if slug is not None:
            self.slug = slug

    def __reduce__(self):
        # pickled (an analysis sent back by a worker process) as its message and attributes:
        # the subclasses' constructors take other arguments than the message they make
        state = dict(self.__dict__)
        if isinstance(self, OSError):
            state.update(errno=self.errno, strerror=self.strerror, filename=self.filename)
        return rebuilt, (type(self), self.args, state)


def rebuilt(cls: type, args: tuple, state: dict) -> TraceauditError:
    """An error of class ``cls`` as it was sent (pickled, or as JSON by Dask workers)."""
    exc = cls.__new__(cls)
    exc.args = args
    for name, value in state.items():
        setattr(exc, name, value)
    return exc


class CaptureError(TraceauditError):
    """A capture file cannot be read (or can only be read up to ``offset``)."""

    slug = "capture"

    def __init__(self, path: str, message: str, *, offset: int | None = None,
                 slug: str | None = None) -> None:
        from traceaudit.names import display_name     # (import traceaudit stays light)
        self.path = os.fsdecode(path)    # as the file system gave it; the message escapes it
        self.offset = offset
        where = f" at byte offset {offset}" if offset is not None else ""
        super().__init__(f"{display_name(self.path)}{where}: {message}", slug=slug)
        self.reason = message


class CaptureBug(CaptureError):
    """Analysing a capture raised an unexpected exception: a bug in traceaudit, reported
    against that capture alone (the other captures of the run are still analysed).
    ``details`` is the formatted traceback (the exception itself is not kept: its frames
    would keep the capture's tables alive)."""

    slug = "internal-error"

    def __init__(self, path: str, exc: BaseException) -> None:
        from traceaudit.names import one_line
        text = one_line(str(exc).strip())
        super().__init__(path, f"internal error: {type(exc).__name__}"
                         f"{': ' + text if text else ''} — this is a bug, please report it",
                         slug=self.slug)
        self.details = "".join(traceback.format_exception(exc))


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says a disk is full or a quota is used up."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def capture_failure(path: str, exc: BaseException) -> CaptureError:
    """The error for an exception that escaped analysing the capture ``path``: a full disk or
    exhausted memory is said as such (what to do about it), anything else is a bug."""
    if disk_full(exc):
        import tempfile
        return CaptureError(path, f"no space left on the disk of the temporary files "
                                  f"({tempfile.gettempdir()}; {exc.strerror}): connections "
                                  f"are spilled there while reading; free some space or point "
                                  f"TMPDIR at a larger disk (analyze --no-spill keeps them in "
                                  f"memory instead)", slug="no-space")
    if isinstance(exc, MemoryError):
        return CaptureError(path, "out of memory while analysing it: read fewer captures at "
                                  "once (--jobs), or let analyze spill (--spill)",
                            slug="out-of-memory")
    return CaptureBug(path, exc)


class CaptureNotFoundError(CaptureError, FileNotFoundError):
    """A path given to read does not exist: also a ``FileNotFoundError`` (``errno``,
    ``filename``), so ``except FileNotFoundError`` catches it."""

    slug = "not-found"

    def __init__(self, path: str) -> None:
        super().__init__(path, "no such file or directory")
        self.errno = errno.ENOENT
        self.strerror = os.strerror(errno.ENOENT)
        self.filename = self.path

    __str__ = TraceauditError.__str__       # "PATH: no such file or directory", not OSError's


class ConfigError(TraceauditError):
    """Settings that cannot be used: a bad config file, threshold, severity or option."""

    slug = "config"


class UnknownRuleError(ConfigError):
    """A rule name, code or code prefix that matches no rule."""

    slug = "unknown-rule"


class ClusterError(TraceauditError):
    """A Dask cluster (``--scheduler``) that cannot be used: not reachable, or the ``cluster``
    extra is not installed."""

    slug = "cluster"
