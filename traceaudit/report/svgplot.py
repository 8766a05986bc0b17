"""Small hand-drawn SVG plots for the HTML report: step charts and sparklines.

A plotting library would add a second of imports and tens of kilobytes per chart for what is
a few step lines; these write one path per series, emitting a point only where a value
changes. Colours and fonts come from the report's stylesheet (classes ``st-*``).
"""

from __future__ import annotations

import numpy as np
from markupsafe import Markup, escape


def state_class(name: str) -> str:
    return "st-" + name.lower().replace("_", "-")


def _step_path(values: np.ndarray, x0: float, dx: float, y0: float, scale: float) -> str:
    """An SVG path of a step function: H to each change, V to its new level."""
    v = np.asarray(values, np.int64)
    if not len(v):
        return ""
    change = np.flatnonzero(np.diff(v)) + 1
    parts = [f"M{x0:.1f},{y0 - v[0] * scale:.1f}"]
    for i, val in zip(change.tolist(), v[change].tolist()):
        parts.append(f"H{x0 + i * dx:.1f}V{y0 - val * scale:.1f}")
    parts.append(f"H{x0 + len(v) * dx:.1f}")
    return "".join(parts)


def _nice_max(v: int) -> int:
    if v <= 4:
        return max(v, 1)
    mag = 10 ** (len(str(v)) - 1)
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return int(m * mag)
    return v


def step_chart(series: dict[str, np.ndarray], duration_s: float, *, width: int = 1180,
               height: int = 200, label: str = "", marks: tuple[float, ...] = ()) -> Markup:
    """Several step series over [0, duration_s] on one set of axes (y: endpoints); a dashed
    vertical line at each of ``marks`` (seconds)."""
    left, right, top, bottom = 52, 28, 10, 24
    pw, ph = width - left - right, height - top - bottom
    peak = max((int(v.max()) for v in series.values() if len(v)), default=0)
    ymax = _nice_max(peak)
    scale = ph / ymax
    n = max((len(v) for v in series.values()), default=1)
    dx = pw / max(n, 1)
    y0 = top + ph
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{escape(label)}">']
    for frac in (0, 0.5, 1):
        y = y0 - frac * ph
        val = ymax * frac
        text = f"{val:,.0f}" if val == int(val) else f"{val:,.1f}"
        out.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="ax" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{text}</text>')
    for frac in (0, 0.25, 0.5, 0.75, 1):
        x = left + frac * pw
        out.append(f'<text class="ax" x="{x:.1f}" y="{height - 6}" text-anchor="middle">'
                   f'{escape(_fmt_s(duration_s * frac))}</text>')
    for m in marks:
        x = left + (m / duration_s if duration_s else 0) * pw
        out.append(f'<line class="mark" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{y0}"/>')
    for name, values in series.items():
        out.append(f'<path class="ln {state_class(name)}" '
                   f'd="{_step_path(values, left, dx, y0, scale)}"><title>{escape(name)}</title>'
                   f'</path>')
    out.append("</svg>")
    return Markup("".join(out))


def sparkline(values: np.ndarray, *, width: int = 160, height: int = 26,
              cls: str = "st-close-wait") -> Markup:
    v = np.asarray(values, np.int64)
    peak = int(v.max()) if len(v) else 0
    if peak <= 0:
        return Markup(f'<svg class="spark" width="{width}" height="{height}"><line class="grid" '
                      f'x1="0" x2="{width}" y1="{height - 2}" y2="{height - 2}"/></svg>')
    path = _step_path(v, 0, width / len(v), height - 2, (height - 4) / peak)
    return Markup(f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" '
                  f'height="{height}"><path class="ln {cls}" d="{path}"/></svg>')


def _fmt_s(s: float) -> str:
    if s == 0:
        return "0"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
