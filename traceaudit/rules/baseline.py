"""Baseline files: known findings, by fingerprint, that CI should not fail on again.

``traceaudit analyze ... --write-baseline FILE`` records every finding; later runs with
``--baseline FILE`` report only findings whose fingerprint is not in it. A fingerprint names the
rule, the cause, the capture's file name and the connection's endpoints (not the frame
numbers), so re-analysing the same recording matches and a new ending does not.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from traceaudit.errors import ConfigError
from traceaudit.names import display_name
from traceaudit.rules.model import Finding

BASELINE_FORMAT = 1


def render_baseline(findings: list[Finding], tool_version: str) -> bytes:
    entries = {}
    for f in sorted(findings, key=lambda f: (f.capture, f.ts, f.code)):
        entries.setdefault(f.fingerprint, {"rule": f.rule, "capture": display_name(f.capture),
                                           "subject": f.key or f.host or "",
                                           "endpoint": f.endpoint, "message": f.message})
    doc = {"format": BASELINE_FORMAT, "tool": {"name": "traceaudit", "version": tool_version},
           "findings": entries}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def load_baseline(path: str) -> set[str]:
    """Fingerprints in a baseline file; a clear ConfigError when it is missing or malformed."""
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: baseline file not found (create it with "
                          f"--write-baseline)") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read baseline: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT or \
            not isinstance(doc.get("findings"), dict):
        raise ConfigError(f"{path}: not a traceaudit baseline (format {BASELINE_FORMAT})")
    return set(doc["findings"])


def split_by_baseline(findings: list[Finding], known: set[str]
                      ) -> tuple[list[Finding], list[Finding]]:
    """(new findings, suppressed findings)."""
    new, old = [], []
    for f in findings:
        (old if f.fingerprint in known else new).append(f)
    return new, old
