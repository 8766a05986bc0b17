"""HTML report: one self-contained file (inline CSS, JS and SVG; nothing fetched).

``render_html(report)`` turns an ``AuditReport`` into the page an on-call engineer opens from
a ticket: what was captured, how connections ended, the state census over time, the services
that leak, and every finding with its evidence (a ladder diagram of the packets that matter,
the frames and a Wireshark filter to copy). Templates are Jinja2 with autoescaping; the SVG
built here escapes every value itself; the findings table's data is JSON (compressed when
large) that the page's script renders, filters and sorts.
"""

from __future__ import annotations

import base64
import gc
import hashlib
from collections import Counter
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import PurePath

import numpy as np
from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from traceaudit.audit import AuditReport
from traceaudit.names import display_name
from traceaudit.pipeline import CaptureAnalysis
from traceaudit.report import facts_text as FT
from traceaudit.report import html_evidence as E
from traceaudit.report import html_findings as F
from traceaudit.report import ladder as L
from traceaudit.report.html_census import census_view, one_clock
from traceaudit.report.svgplot import sparkline, state_class
from traceaudit.rules.model import Finding, Severity

MAX_DETAILS = 200          # findings drawn in full (ladder and all)
MAX_PER_RULE = 20          # ... of which at most this many per rule
OPEN_CAPTURES = 3          # capture sections start open when at most this many have findings
OPEN_LIST = 20             # ... and the section draws at most this many findings' evidence
OPEN_EVIDENCE = 3          # a finding's evidence starts open when its capture draws this few
_ROLES = ("client", "server", "simultaneous", "none")
_KINDS = ("graceful", "half_closed", "reset", "refused", "open")


def render_html(report: AuditReport, *, max_details: int = MAX_DETAILS,
                max_per_rule: int = MAX_PER_RULE, max_listed: int = F.LIST_PER_RULE) -> bytes:
    """The report page as UTF-8 bytes. ``max_listed``: findings of a rule the table lists
    (the most severe first, then in order; at least ``max_per_rule``)."""
    enabled = gc.isenabled()
    gc.disable()            # no full collections over the analyses' heap while drawing
    try:
        return _render(report, max_details, max_per_rule, max(max_listed, max_per_rule))
    finally:
        if enabled:
            gc.enable()


def _render(report: AuditReport, max_details: int, max_per_rule: int,
            max_listed: int) -> bytes:
    caps = [_Capture(i, a) for i, a in enumerate(report.analyses)]
    by_path = {c.a.stats.path: c for c in caps}
    summary = F.summarize(report.findings, {p: c.index for p, c in by_path.items()}, max_listed)
    rules = _rules(report, summary)
    chosen = F.choose_details(summary, max_details, max_per_rule)
    _gather(caps, summary, chosen)
    hosts = _listed_hosts(summary, caps)
    host_counts = Counter(summary.own_hosts)
    for c in caps:
        host_counts.update(c.g.hosts)
    host_counts.pop("", None)
    table = F.table_data(summary, hosts, chosen, rules, [c.name for c in caps],
                         [(c.a.stats.first_ts_ns or 0) / 1e9 for c in caps])
    details = [_detail(summary.listed[k][0], summary.listed[k][1], by_path, rules)
               for k in chosen]
    sev = summary.cap_sev
    per_cap = [sum(sev.get((c.index, int(s)), 0) for s in Severity) for c in caps]
    js = _asset("report.js")
    rule_counts = F.rule_counts(summary, rules)
    ctx = {
        "title": _title(caps),
        "report": report,
        "overview": _overview(caps),
        "verdict": _verdict(report, summary),
        "rules": rules,
        "rule_counts": rule_counts,
        "census": census_view(caps, per_cap, _iso, _dur),
        "services": _services(caps),
        "sections": _sections(caps, details, sev),
        "hosts": sorted(host_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:400],
        "n_findings": summary.n,
        "n_listed": len(summary.listed),
        "max_listed": max_listed,
        "n_details": len(chosen),
        "max_per_rule": max_per_rule,
        "css": Markup(_asset("report.css")),
        "js": Markup(js),
        "script_hash": _sha256(js),
        "ladder_defs": L.LADDER_DEFS,
        "state_class": state_class,
    }
    ctx["table_data"] = table()
    return _env().get_template("report.html.j2").render(ctx).encode("utf-8")


def _gather(caps: list[_Capture], summary: F.Summary, chosen: list[int]) -> None:
    """Each capture's part of the page, in one pass over its connections (``html_evidence``):
    what the findings drawn (``chosen``) and listed ask of it."""
    wants = {c.index: E.Wants(*summary.per_capture.get(
        c.index, (np.zeros(0, np.int64), np.zeros(0, np.uint8)))) for c in caps}
    for k in chosen:
        _, f, cap = summary.listed[k]
        if cap < 0:
            continue
        w, n = wants[cap], len(caps[cap].a.table)
        conn = _named_connection(f, n)
        if conn is not None:
            w.details.add(conn)
        elif f.frames and n:
            w.frames.add(f.frames[0])
    for _, f, cap in summary.listed:
        if cap >= 0 and not f.host and f.connection is not None:
            wants[cap].addresses.add(f.connection)
    spans = [(c.a.stats.first_ts_ns, c.a.stats.last_ts_ns) for c in caps if c.timed]
    grid = None
    if one_clock(spans):
        grid = (min(a for a, _ in spans), max(b for _, b in spans))
    for c in caps:
        c.g = E.gather(c.a, wants[c.index], grid if c.timed else None)


def _listed_hosts(summary: F.Summary, caps: list[_Capture]) -> list[str]:
    """The host of each listed finding: its own, else its connection's address of the
    endpoint at fault (the server's unless the client is), else none."""
    out = []
    for _, f, cap in summary.listed:
        host = f.host or ""
        if not host and cap >= 0 and f.connection is not None:
            ips = caps[cap].g.addresses.get(f.connection)
            if ips is not None:
                host = ips[0] if f.endpoint == "client" else ips[1]
        out.append(host)
    return out


# -- captures ------------------------------------------------------------------------------
class _Capture:
    def __init__(self, index: int, a: CaptureAnalysis) -> None:
        self.index, self.a = index, a
        self.name = display_name(PurePath(a.stats.path).name or a.stats.path)
        if a.stats.parts:                       # a rotated set read as one timeline
            self.name += f" + {len(a.stats.parts) - 1} file(s)"
        self.n = len(a.table)
        self.timed = self.n > 0 and a.stats.first_ts_ns is not None
        self.g: E.Gathered | None = None        # (``_gather``)

    def kinds(self) -> dict:
        """How many of the capture's connections ended each way (``close_kind``)."""
        return dict(self.g.kinds)


def _overview(caps: list[_Capture]) -> dict:
    firsts = [c.a.stats.first_ts_ns for c in caps if c.a.stats.first_ts_ns is not None]
    lasts = [c.a.stats.last_ts_ns for c in caps if c.a.stats.last_ts_ns is not None]
    roles, kinds = Counter(), Counter()
    for c in caps:
        roles.update(c.g.roles)
        kinds.update(c.g.kinds)
    conns = sum(c.n for c in caps)
    return {
        "captures": [c.name for c in caps],
        "packets": sum(c.a.stats.packets for c in caps),
        "tcp_packets": sum(c.a.stats.tcp_packets for c in caps),
        "connections": conns,
        "start": _iso(min(firsts)) if firsts else "",
        "end": _iso(max(lasts)) if lasts else "",
        "duration": _dur((max(lasts) - min(firsts)) / 1e9) if firsts else "",
        "roles": _bar(roles, _ROLES, conns),
        "kinds": _bar(kinds, _KINDS, conns),
        "damaged": sum(1 for c in caps if c.a.failed),
    }


# -- one section per capture: its facts and its findings' evidence ---------------------------
def _sections(caps: list[_Capture], details: list[dict], sev: Counter) -> list[dict]:
    """The captures with findings first (the worst, then the most findings), then the others
    in order. A section starts open only when at most ``OPEN_CAPTURES`` captures have findings,
    it has some, and it draws at most ``OPEN_LIST``; a finding's evidence starts closed when
    its capture draws more than ``OPEN_EVIDENCE``: the page opens short, the findings table
    above is the index, and its links open what they lead to."""
    drawn: dict[int, list[dict]] = {}
    for d in details:
        drawn.setdefault(d["cap_index"], []).append(d)
    rows = [_capture_row(c, drawn.get(c.index, []), sev) for c in caps]
    if any(k == -1 for k, _ in sev):      # findings about a capture not in the run
        rows.append({"index": -1, "name": "findings about captures not in this run",
                     "path": "", "packets": 0, "connections": 0, "duration": "", "error": "",
                     "warnings": [], "timeline": "", **_findings_of(-1, drawn.get(-1, []), sev)})
    rows.sort(key=lambda r: (not r["n_findings"], -r["worst"], -r["n_findings"], r["index"]))
    opened = sum(1 for r in rows if r["n_findings"]) <= OPEN_CAPTURES
    for r in rows:
        r["open"] = opened and bool(r["n_findings"]) and len(r["details"]) <= OPEN_LIST
        for d in r["details"]:
            d["open"] = len(r["details"]) <= OPEN_EVIDENCE
    return rows


def _capture_row(c: _Capture, drawn: list[dict], sev: Counter) -> dict:
    st = c.a.stats
    span = (st.last_ts_ns - st.first_ts_ns) / 1e9 if st.first_ts_ns is not None else None
    return {"index": c.index, "name": c.name, "path": display_name(st.path), "format": st.format,
            "packets": st.packets, "tcp_packets": st.tcp_packets,
            "connections": len(c.a.table), "start": _iso(st.first_ts_ns),
            "duration": _dur(span) if span is not None else "", "warnings": list(st.warnings),
            "error": str(st.error) if st.error is not None else "",
            "kinds": [(b["label"], b["count"]) for b in _bar(Counter(c.kinds()), _KINDS, 0)],
            "timeline": _timeline_text(st), **_findings_of(c.index, drawn, sev)}


def _findings_of(index: int, drawn: list[dict], sev: Counter) -> dict:
    """A section's findings: per severity (worst first), how many, the worst, those drawn."""
    by_sev = [(s.label, sev.get((index, int(s)), 0)) for s in sorted(Severity, reverse=True)]
    n = sum(k for _, k in by_sev)
    worst = max((int(s) for s in Severity if sev.get((index, int(s)))), default=-1)
    return {"by_sev": [(label, k) for label, k in by_sev if k], "n_findings": n,
            "worst": worst, "details": drawn, "undrawn": n - len(drawn)}


def _timeline_text(st) -> str:
    """A rotated set read as one timeline: its files, and the merged capture its frames are
    numbered in ("" for a single file)."""
    if not st.parts:
        return ""
    from traceaudit.capture.chain import merge_command
    files = ", ".join(f"{display_name(PurePath(p.path).name)} ({p.packets:,})"
                      for p in st.parts)
    return (f"one timeline of {len(st.parts)} files ({st.joined_by}): {files}; frame "
            f"numbers as in: {display_name(merge_command(st))}")


def _bar(counts: Counter, order: tuple[str, ...], total: int) -> list[dict]:
    keys = list(order) + sorted(k for k in counts if k not in order)
    return [{"label": k, "count": counts.get(k, 0),
             "pct": 100.0 * counts.get(k, 0) / total if total else 0.0}
            for k in keys if counts.get(k, 0)]


def _title(caps: list[_Capture]) -> str:
    if len(caps) == 1:
        return f"traceaudit: {caps[0].name}"
    return f"traceaudit: {len(caps)} captures"


# -- findings summary ------------------------------------------------------------------------
def _rules(report: AuditReport, summary: F.Summary) -> list[dict]:
    out, seen = [], set()
    for r in report.rules:
        seen.add(r.name)
        out.append({"name": r.name, "code": r.code, "title": r.title,
                    "severity": r.severity.label, "rationale": r.rationale,
                    "remediation": r.remediation, "references": list(r.references),
                    "params": report.params.get(r.name, dict(r.thresholds))})
    for name in sorted(set(summary.first_of_rule) - seen):   # a finding from a rule not listed
        f = summary.first_of_rule[name]
        out.append({"name": f.rule, "code": f.code, "title": f.rule, "severity": "",
                    "rationale": "", "remediation": f.remediation, "references": [],
                    "params": {}})
    return out


def _verdict(report: AuditReport, summary: F.Summary) -> dict:
    sev = summary.sev
    failing = sum(n for s, n in sev.items() if s >= report.fail_on)
    return {"failing": failing, "fail_on": report.fail_on.label,
            "by_sev": [(s.label, sev.get(int(s), 0)) for s in sorted(Severity, reverse=True)],
            "suppressed": len(report.suppressed), "unreadable": len(report.unreadable)}


# -- services --------------------------------------------------------------------------------
def _services(caps: list[_Capture]) -> dict:
    rows = []
    for c in caps:
        for rec in c.g.services:
            rec = dict(rec, capture=c.name)
            spark = rec.pop("spark")
            rec["cw_peak"] = int(spark.max()) if len(spark) else 0
            rec["spark_svg"] = sparkline(spark)
            rows.append(rec)
    rows.sort(key=lambda r: (-r["findings"], -r["server_CLOSE_WAIT_held"],
                             -r["client_CLOSE_WAIT_held"], -r["connections"]))
    return {"rows": rows[:30], "omitted": max(0, len(rows) - 30), "multi": len(caps) > 1}


# -- one finding in full ---------------------------------------------------------------------
def _detail(i: int, f: Finding, by_path: dict, rules: list[dict]) -> dict:
    cap = by_path.get(f.capture)
    rule = next(r for r in rules if r["name"] == f.rule)
    first = cap.a.stats.first_ts_ns if cap is not None else None
    conn = _ladder_connection(f, cap)
    ladder, conn_text, fault = None, "", ""
    info = cap.g.conns.get(conn) if cap is not None and conn is not None else None
    if info is not None:
        client = _addr(info.client_ip, info.client_port)
        server = _addr(info.server_ip, info.server_port)
        conn_text = f"client {client} → server {server} (tcp.stream {conn})"
        if f.endpoint in ("client", "server"):
            fault = f"{f.endpoint} {client if f.endpoint == 'client' else server}"
        if info.packets is not None:
            end = (cap.a.stats.last_ts_ns or 0, info.client_state, info.server_state)
            ladder = L.ladder_svg(info.packets, L.connection_changes(info.events),
                                  info.count, client, server, set(f.frames), end)
    if not fault:
        fault = f.host or f.endpoint or ""
    frames_filter = F.frames_filter(f.frames)
    return {
        "i": i, "anchor": f"f{i}", "cap_index": cap.index if cap is not None else -1,
        "code": f.code, "rule": f.rule, "title": rule["title"],
        "severity": f.severity.label, "message": f.message, "fault": fault,
        "capture": cap.name if cap is not None else display_name(f.capture),
        "capture_path": display_name(f.capture),
        "time": _iso(int(f.ts * 1e9)), "rel": _dur(f.ts - first / 1e9) if first else "",
        "frames": f.frames, "filter": f.display_filter or frames_filter,
        "frames_filter": frames_filter if f.display_filter and f.frames else "",
        "rationale": rule["rationale"], "remediation": f.remediation or rule["remediation"],
        "references": rule["references"], "conn_text": conn_text, "ladder": ladder,
        "ladder_conn": conn, "details": FT.facts(f.details),
        "merged": _merge_command(cap.a.stats) if cap is not None and cap.a.stats.parts else "",
    }


def _merge_command(st) -> str:
    from traceaudit.capture.chain import merge_command
    return display_name(merge_command(st))


def _named_connection(f: Finding, n: int) -> int | None:
    """The connection a finding names (of a capture of ``n``): its own, else the first of
    its details' ``connections``."""
    if not n:
        return None
    if f.connection is not None and 0 <= f.connection < n:
        return int(f.connection)
    conns = f.details.get("connections") if isinstance(f.details, dict) else None
    if isinstance(conns, list) and conns and isinstance(conns[0], int) and 0 <= conns[0] < n:
        return conns[0]
    return None


def _ladder_connection(f: Finding, cap: _Capture | None) -> int | None:
    """The connection a finding's ladder shows: the one it names, else the first holding its
    first frame among its kept packets, else the first whose span holds it (looked up by
    ``html_evidence.gather``)."""
    if cap is None or not cap.n:
        return None
    conn = _named_connection(f, cap.n)
    if conn is not None or not f.frames:
        return conn
    return cap.g.by_frame.get(f.frames[0])


# -- helpers ---------------------------------------------------------------------------------
def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"


def _iso(ns: int | None) -> str:
    if ns is None:
        return ""
    dt = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d} UTC"


def _dur(s: float | None) -> str:
    if s is None:
        return ""
    if s < 1:
        return f"{s * 1000:.1f} ms" if s < 0.1 else f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.3f} s" if s < 10 else f"{s:.1f} s"
    if s < 7200:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def _sha256(text: str) -> str:
    """CSP source for an inline script: only the report's own script may run."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _asset(name: str) -> str:
    return resources.files("traceaudit.report").joinpath("templates", name).read_text("utf-8")


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=PackageLoader("traceaudit.report", "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v: f"{int(v):,}"
    env.filters["pct"] = lambda v: f"{v:.1f}%"
    env.filters["code"] = FT.code_html
    return env
