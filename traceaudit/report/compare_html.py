"""``traceaudit compare --html FILE``: one self-contained page (no script, nothing fetched):
the comparison at a glance, the connections with packets dropped or created on the path, and
for each of them the two vantage points' ladder diagrams side by side (``compare_ladder``)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from traceaudit.compare import Comparison
from traceaudit.report.compare_ladder import side_by_side
from traceaudit.report.compare_text import (fmt_ns, frames_filter, packet_text, side_name,
                                            translation)
from traceaudit.report.ladder import LADDER_DEFS

#: connections drawn (the JSON report lists them all)
MAX_DRAWN = 50


def render(c: Comparison, *, tool_version: str, generated_at: str) -> bytes:
    al = c.alignment
    differing = c.differing
    ctx = {
        "css": Markup(resources.files("traceaudit.report").joinpath(
            "templates", "report.css").read_text("utf-8")),   # the analyze report's styles
        "ladder_defs": LADDER_DEFS,
        "tool_version": tool_version,
        "generated": generated_at,
        "names": {"a": side_name(c, "a"), "b": side_name(c, "b")},
        "captures": [_capture(c, side) for side in ("a", "b")],
        "offset": fmt_ns(al.offset_ns) if al.offset_samples else "unknown",
        "offset_samples": al.offset_samples,
        "delay": fmt_ns(al.delay_ns) if al.delay_ns >= 0 else "",
        "matched": len(c.pairs),
        "translated": sum(1 for p in c.pairs if p.translated),
        "dropped": c.dropped, "created": c.created,
        "differing": [_connection(c, p, i < MAX_DRAWN) for i, p in enumerate(differing)],
        "undrawn": max(0, len(differing) - MAX_DRAWN),
        "unmatched": {"a": c.unmatched_a[:200], "b": c.unmatched_b[:200]},
        "unmatched_n": {"a": len(c.unmatched_a), "b": len(c.unmatched_b)},
    }
    return _env().get_template("compare.html.j2").render(ctx).encode("utf-8")


def _capture(c: Comparison, side: str) -> dict:
    v = c.a if side == "a" else c.b
    return {"side": side, "name": side_name(c, side), "packets": v.stats.packets,
            "connections": len(v.flows), "error": str(v.stats.error) if v.stats.error else ""}


def _connection(c: Comparison, p, draw: bool) -> dict:
    ladders = side_by_side(c, p) if draw else (None, None)
    packets = sorted((*p.dropped, *p.created), key=lambda x: (x.seen_in, x.frame))
    return {
        "id": f"conn-a{p.conn_a}", "pair": p, "translation": translation(p),
        "filters": {"a": frames_filter(p, "a"), "b": frames_filter(p, "b")},
        "packets": [{"kind": x.kind, "seen_in": x.seen_in, "frame": x.frame,
                     "direction": x.direction, "text": packet_text(x)} for x in packets],
        "ladder_a": ladders[0], "ladder_b": ladders[1],
    }


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=PackageLoader("traceaudit.report", "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v: f"{int(v):,}"
    return env
