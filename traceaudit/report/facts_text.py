"""A finding's evidence facts (``Finding.details``) and rule texts written for people: the
terminal summary and the HTML report use these; the JSON, SARIF and JUnit reports keep the raw
values.

Durations (keys ending in ``_s``) read ``21 µs``, ``340 ms``, ``4.0 s``; booleans ``yes`` or
``no``; a backticked command in a rule's rationale or remediation becomes ``<code>`` in HTML.
"""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup, escape

from traceaudit.rules.common import seconds

_BACKTICKED = re.compile(r"`([^`\n]+)`")
MAX_LIST = 30


def duration(s: float) -> str:
    """Seconds as a person reads them (``rules.common.seconds``: ``21 µs``, ``340 ms``,
    ``4.0 s``, ``12 min 5 s``)."""
    return seconds(s * 1_000_000_000)


def label(key: str) -> str:
    """A fact's name: ``idle_s`` -> ``idle``, ``still_open_at_capture_end`` -> ``still open
    at capture end``."""
    if key.endswith("_s") and len(key) > 2:
        key = key[:-2]
    return key.replace("_", " ")


def value(key: str, v: Any) -> str:
    """A fact's value as text (never the repr of a float or a boolean)."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)) and key.endswith("_s"):
        return duration(float(v))
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        text = ", ".join(value("", x) for x in v[:MAX_LIST])
        return text + (f" … ({len(v)} in all)" if len(v) > MAX_LIST else "")
    if v is None:
        return "-"
    return str(v)


def facts(details: dict[str, Any]) -> list[tuple[str, str]]:
    """Every fact as (label, value) text, in the rule's order."""
    return [(label(k), value(k, v)) for k, v in details.items()]


def code_html(text: str) -> Markup:
    """Rule text as HTML: escaped, with each `backticked command` as ``<code>``."""
    out, pos = [], 0
    for m in _BACKTICKED.finditer(text):
        out.append(escape(text[pos:m.start()]))
        out.append(Markup("<code>") + escape(m.group(1)) + Markup("</code>"))
        pos = m.end()
    out.append(escape(text[pos:]))
    return Markup("").join(out)
