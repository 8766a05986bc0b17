"""How a capture's name is written: as the file system gave it, with what text cannot carry escaped.

A path is carried through the analysis as the file system gives it (a ``str`` whose
undecodable bytes are lone surrogates, Python's ``surrogateescape``); every report, the
terminal and every error message write it through ``display_name``, so a name is spelled the
same everywhere and no writer fails on it.
"""

from __future__ import annotations

import os
import re

#: what ``display_name`` escapes: undecodable bytes (surrogates), C0 controls, DEL, C1 controls
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    ch = match.group()
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:         # an undecodable byte, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    if code >= 0xD800:                   # any other lone surrogate (not from a file system)
        return f"\\u{code:04x}"
    return _NAMED.get(ch) or f"\\x{code:02x}"


def display_name(path: str | bytes | os.PathLike) -> str:
    """``path`` as printable, encodable text: bytes that are not UTF-8 as ``\\xNN``, control
    characters (a newline, ESC, ...) as ``\\n``, ``\\t``, ``\\r`` or ``\\xNN``; anything else
    unchanged. Idempotent, so text already escaped can pass through it again."""
    text = os.fsdecode(path)
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def one_line(text: object) -> str:
    """A message for one line of the terminal: ``display_name``'s escapes applied to all of it
    (a file name with a newline cannot split it, escape codes do not reach the terminal)."""
    return display_name(str(text))
