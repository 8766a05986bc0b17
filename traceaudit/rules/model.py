"""What a rule is and what it finds.

A rule is a small module in this package exporting ``RULE``: its metadata (code, kebab-case
name, title, default severity, thresholds with their defaults, rationale, remediation,
references) and a ``check`` function. ``check`` reads one capture's analysis (flow table,
tracker facts, corrected timelines; never bytes) and returns findings. A finding whose
``details["confidence"]`` is ``"low"`` is reported one severity level below its rule's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from traceaudit.names import display_name

if TYPE_CHECKING:
    from traceaudit.pipeline import CaptureAnalysis


class Severity(IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2

    @property
    def label(self) -> str:
        return _LABELS[self]

    @classmethod
    def parse(cls, text: str) -> "Severity":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (info, warning or error)") from None


_LABELS = tuple(s.name.lower() for s in Severity)   # (an enum's name is slow to read)

Params = Mapping[str, Any]
Check = Callable[["CaptureAnalysis", Params], Iterable["Finding"]]


@dataclass(frozen=True)
class Rule:
    code: str                       # stable short id, e.g. "TA101"
    name: str                       # kebab-case name used on the command line and in config
    title: str                      # one line
    severity: Severity              # default severity
    rationale: str                  # why this ending is a problem (plain words)
    remediation: str                # how to fix it
    check: Check
    thresholds: Mapping[str, float | int | bool] = field(default_factory=dict)
    threshold_help: Mapping[str, str] = field(default_factory=dict)
    references: tuple[str, ...] = ()   # RFC sections, kernel docs


@dataclass(slots=True)
class Finding:
    """One verdict, explainable from frames the user can open in Wireshark.

    (Slots: a large capture has tens of thousands of findings; they are made and written
    several times faster than with an instance dict.)"""

    rule: str
    code: str
    severity: Severity
    capture: str                    # capture file path as given (a rotated set read as one
                                    # timeline: its first file's; frames are the timeline's)
    ts: float                       # epoch seconds of the decisive moment
    frames: list[int]               # decisive frames, in capture order
    message: str                    # what happened, in plain words, with figures
    remediation: str
    connection: int | None = None   # flow id in the capture (== Wireshark tcp.stream)
    endpoint: str | None = None     # "client" or "server": the endpoint at fault
    host: str | None = None         # host-level findings carry the host instead
    display_filter: str = ""        # Wireshark display filter showing the evidence
    details: dict[str, Any] = field(default_factory=dict)   # rule-specific (cause, confidence…)
    key: str = ""                   # what identifies the subject (endpoints), for fingerprints
    _fingerprint: str = field(default="", repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        """Stable across runs of the same capture and across unrelated changes to others.
        Computed once: by ``View.findings`` as it makes a rule's findings, else on first use.
        The rule, capture, endpoint, cause and ``key`` (else ``host``) it is made of must not
        change after that."""
        fingerprint = self._fingerprint
        if not fingerprint:
            fingerprint = self._fingerprint = fingerprints(
                self.rule, self.capture, self.endpoint, [self.details.get("cause", "")],
                [self.key or self.host or ""])[0]
        return fingerprint

    def to_dict(self) -> dict[str, Any]:
        """The JSON report's finding entry (plain Python values)."""
        entry: dict[str, Any] = {
            "rule": self.rule, "code": self.code, "severity": _LABELS[self.severity],
            "capture": display_name(self.capture), "connection": self.connection, "endpoint": self.endpoint,
            "ts": self.ts, "frames": self.frames, "message": self.message,
            "remediation": self.remediation, "display_filter": self.display_filter,
            "fingerprint": self._fingerprint or self.fingerprint,
        }
        if self.host is not None:
            entry["host"] = self.host
        entry.update(self.details)
        return entry


def fingerprints(rule: str, capture: str, endpoint: str | None, causes: list,
                 subjects: list[str]) -> list[str]:
    """``Finding.fingerprint`` of findings of one rule, capture and endpoint, by their
    ``details["cause"]`` and subject (``key``, else ``host``): a rule's findings get theirs
    at once, while their texts are at hand."""
    head, mid, tail = f"{rule}\x1f", f"\x1f{_basename(capture)}\x1f", f"\x1f{endpoint or ''}"
    sha256 = hashlib.sha256
    return [sha256(f"{head}{cause}{mid}{subject}{tail}".encode("utf-8", "replace"))
            .hexdigest()[:24] for cause, subject in zip(causes, subjects)]


@lru_cache(maxsize=256)
def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]
