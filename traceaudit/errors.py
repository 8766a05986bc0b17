"""Error types. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

import errno
import os


class TraceauditError(Exception):
    """Base error; ``slug`` names the kind of problem for docs and tests."""

    slug = "error"

    def __init__(self, message: str, *, slug: str | None = None) -> None:
        super().__init__(message)
        if slug is not None:
            self.slug = slug


class CaptureError(TraceauditError):
    """A capture file cannot be read (or can only be read up to ``offset``)."""

    slug = "capture"

    def __init__(self, path: str, message: str, *, offset: int | None = None,
                 slug: str | None = None) -> None:
        self.path = str(path)
        self.offset = offset
        where = f" at byte offset {offset}" if offset is not None else ""
        super().__init__(f"{self.path}{where}: {message}", slug=slug)
        self.reason = message


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
