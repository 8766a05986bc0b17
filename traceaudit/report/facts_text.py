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

_BACKTICKED = re.compile(r"`([^`\n]+)`")
MAX_LIST = 30


def duration(s: float) -> str:
    """Seconds as a person reads them: ``21 µs``, ``1.5 ms``, ``340 ms``, ``4.0 s``,
    ``12 min 5 s``, ``3 h 2 min``."""
    a = abs(s)
    sign = "-" if s < 0 else ""
    if a == 0:
        return "0 s"
    if a < 1e-3:
        return f"{sign}{a * 1e6:.0f} µs"
    if a < 1:
        return f"{sign}{a * 1e3:.1f} ms" if a < 0.01 else f"{sign}{a * 1e3:.0f} ms"
    if a < 120:
        return f"{sign}{a:.1f} s"
    if a < 7200:
        return f"{sign}{int(a // 60)} min {int(a % 60)} s"
    return f"{sign}{int(a // 3600)} h {int(a % 3600 // 60)} min"


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
