"""The HTML report's state census: one chart for the run, with a selector between captures.

Captures rarely share a clock: the sample captures were recorded minutes apart, two vantage
points see the same connections twice. So each capture's census is drawn on its own time axis
and the page shows one at a time (the selector switches; without a script every chart is
shown). Only when the captures follow one another without overlapping and with (almost) no
gaps, as a ring buffer's files do, is their sum over one clock meaningful: then "all captures"
is offered first and shown by default. Each file is still analysed on its own, so a socket one
file leaves open or in TIME_WAIT is not carried into the next: the chart marks where files
change, and the page says so.
"""

from __future__ import annotations

import numpy as np

from traceaudit.report import census as C
from traceaudit.report.svgplot import state_class, step_chart

MAX_CHARTS = 24            # captures charted (those with findings, then the most connections)
MAX_GAPS = 0.10            # "one clock": the gaps between captures, at most this share of the run
MAX_OVERLAP = 0.01         # ... and no capture overlaps the next by more than this share of it
ALL = "all"                # the selector's value for every capture on one clock


def census_view(caps: list, findings_per_cap: list[int], fmt_time, fmt_dur) -> dict:
    """The charts (``key``, ``label``, ``caption``, ``svg``, ``legend``), the one shown first
    (``default``) and how many captures were not charted. ``caps``: the report's captures
    (``index``, ``name``, ``n`` connections, ``a``: the analysis, ``g``: what
    ``html_evidence.gather`` summed of it: ``census``, ``merged``, the levels on the run's
    clock when the captures share one); ``fmt_time(ns)`` and ``fmt_dur(s)`` write times and
    durations."""
    timed = [c for c in caps if c.n and c.a.stats.first_ts_ns is not None]
    ranked = sorted(timed, key=lambda c: (-bool(findings_per_cap[c.index]), -c.n, c.index))
    shown = sorted(ranked[:MAX_CHARTS], key=lambda c: c.index)
    charts = []
    if one_clock([(c.a.stats.first_ts_ns, c.a.stats.last_ts_ns) for c in timed]):
        t0 = min(c.a.stats.first_ts_ns for c in timed)
        t1 = max(c.a.stats.last_ts_ns for c in timed)
        levels = {k: sum(c.g.merged[k] for c in timed) for k in timed[0].g.merged}
        peak = {k: int(v.max()) for k, v in levels.items()}
        final = {k: int(v[-1]) for k, v in levels.items()}
        label = f"all {len(timed)} captures, one clock"
        ends = sorted(c.a.stats.last_ts_ns for c in timed)[:-1]
        charts.append(_chart(ALL, label, f"all {len(timed)} captures on one clock", t0, t1,
                             levels, peak, final, fmt_time, fmt_dur,
                             marks=tuple((t - t0) / 1e9 for t in ends)))
    for c in shown:
        st = c.a.stats
        cen = c.g.census
        n, nf = c.n, findings_per_cap[c.index]
        label = (f"{c.name} ({n:,} connection{'s' * (n != 1)}, "
                 f"{nf:,} finding{'s' * (nf != 1)})")
        charts.append(_chart(str(c.index), label, c.name, st.first_ts_ns, st.last_ts_ns,
                             cen.levels, cen.peak, cen.final, fmt_time, fmt_dur))
    default = ""
    if charts:
        default = charts[0]["key"]
        if default != ALL:       # the capture with findings and the most connections
            best = ranked[0]
            default = str(best.index)
    return {"charts": charts, "default": default, "omitted": len(ranked) - len(shown)}


def _chart(key, label, caption, t0, t1, levels, peak, final, fmt_time, fmt_dur,
           marks: tuple[float, ...] = ()) -> dict:
    series = {k: v for k, v in levels.items() if peak[k] > 0}
    dur = (t1 - t0) / 1e9
    step = dur / (len(next(iter(levels.values()))) - 1) if levels and dur else 0.0
    return {"key": key, "label": label, "caption": caption, "start": fmt_time(t0),
            "duration": fmt_dur(dur), "step": fmt_dur(step),
            "legend": [{"state": k, "cls": state_class(k), "peak": peak[k], "final": final[k]}
                       for k in series],
            "svg": step_chart(series, dur, label=f"state census of {caption}", marks=marks)}


def one_clock(spans: list[tuple[int, int]]) -> bool:
    """Whether captures spanning ``spans`` ((first, last) ns each) follow one another like a
    ring buffer's files: two or more, none overlapping the next by more than ``MAX_OVERLAP`` of
    its span, the gaps between them at most ``MAX_GAPS`` of the whole."""
    if len(spans) < 2:
        return False
    spans = sorted(spans)
    whole = max(last for _, last in spans) - spans[0][0]
    if whole <= 0:
        return False
    gaps = 0
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        overlap = a1 - b0
        if overlap > MAX_OVERLAP * max(min(a1 - a0, b1 - b0), 0):
            return False
        gaps += max(-overlap, 0)
    return gaps <= MAX_GAPS * whole


def merged_levels(captures: list[tuple[np.ndarray, int, int]], t0: int, t1: int,
                  samples: int = 400) -> dict[str, np.ndarray]:
    """Every state's census summed over captures ((events, first ns, last ns) each) on one
    grid over [t0, t1]; a capture counts only between its first and last packet (what its
    endpoints did outside it, the capture does not say)."""
    total = {s.name: np.zeros(samples, np.int64) for s in C.CENSUS_STATES}
    times = grid_times(t0, t1, samples)
    for events, first, last in captures:
        ch = C.Changes(events, t0, t1, samples)
        inside = (times >= first) & (times <= last)
        for k, v in C.census(ch).levels.items():
            total[k] += np.where(inside, v, 0)
    return total


def grid_times(t0: int, t1: int, samples: int = 400) -> np.ndarray:
    """The census grid's times in exact integer nanoseconds (``Changes.times`` goes through
    float64, whose steps are 256 ns at today's epoch: its last point can fall after ``t1``)."""
    span, n = max(t1 - t0, 1), max(samples - 1, 1)
    return np.array([t0 + i * span // n for i in range(samples)], np.int64)
