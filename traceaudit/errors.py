"""Error types. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

import os
import traceback


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


class ConfigError(TraceauditError):
    slug = "config"


class UnknownRuleError(ConfigError):
    slug = "unknown-rule"
