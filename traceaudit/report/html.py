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
from traceaudit.report import census as C
from traceaudit.report import facts_text as FT
from traceaudit.report import html_findings as F
from traceaudit.report import ladder as L
from traceaudit.report.html_census import census_view
from traceaudit.report.svgplot import sparkline, state_class
from traceaudit.rules.model import Finding, Severity
from traceaudit.tracking.tracker import EV_CONN

MAX_DETAILS = 200          # findings drawn in full (ladder and all)
MAX_PER_RULE = 20          # ... of which at most this many per rule
OPEN_CAPTURES = 3          # capture sections start open when at most this many have findings
OPEN_LIST = 20             # ... and the section draws at most this many findings' evidence
OPEN_EVIDENCE = 3          # a finding's evidence starts open when its capture draws this few
_ROLES = ("client", "server", "simultaneous", "none")
_KINDS = ("graceful", "half_closed", "reset", "refused", "open")


def render_html(report: AuditReport, *, max_details: int = MAX_DETAILS,
                max_per_rule: int = MAX_PER_RULE) -> bytes:
    """The report page as UTF-8 bytes."""
    enabled = gc.isenabled()
    gc.disable()            # no full collections over the analyses' heap while drawing
    try:
        return _render(report, max_details, max_per_rule)
    finally:
        if enabled:
            gc.enable()


def _render(report: AuditReport, max_details: int, max_per_rule: int) -> bytes:
    caps = [_Capture(i, a) for i, a in enumerate(report.analyses)]
    by_path = {c.a.stats.path: c for c in caps}
    cols = F.columns(report.findings)
    cap_ix = [by_path[p].index if p in by_path else -1 for p in cols.capture]
    rules = _rules(report, cols)
    chosen = F.choose_details(cols, max_details, max_per_rule)
    hosts = F.fault_hosts(cols, cap_ix, [c.a.table for c in caps])
    host_counts = Counter(hosts)
    host_counts.pop("", None)
    table = F.table_data(cols, hosts, cap_ix, chosen, rules, [c.name for c in caps],
                         [(c.a.stats.first_ts_ns or 0) / 1e9 for c in caps])
    details = [_detail(i, report.findings[i], by_path, rules) for i in chosen]
    sev = Counter(zip(cap_ix, cols.sev))
    per_cap = [sum(sev.get((c.index, int(s)), 0) for s in Severity) for c in caps]
    js = _asset("report.js")
    ctx = {
        "title": _title(caps),
        "report": report,
        "overview": _overview(caps),
        "verdict": _verdict(report, cols),
        "rules": rules,
        "rule_counts": F.rule_counts(cols, rules),
        "census": census_view(caps, per_cap, _iso, _dur),
        "services": _services(caps, cols, cap_ix),
        "sections": _sections(caps, details, sev),
        "hosts": host_counts.most_common(400),
        "n_findings": len(report.findings),
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


# -- captures ------------------------------------------------------------------------------
class _Capture:
    def __init__(self, index: int, a: CaptureAnalysis) -> None:
        self.index, self.a = index, a
        self.name = display_name(PurePath(a.stats.path).name or a.stats.path)
        if a.stats.parts:                       # a rotated set read as one timeline
            self.name += f" + {len(a.stats.parts) - 1} file(s)"
        self._ev_conn = None
        self._cols: dict = {}
        self._changes: C.Changes | None = None
        self._kinds: dict | None = None
        self.n = len(a.table)

    def kinds(self) -> dict:
        """How many of the capture's connections ended each way (``close_kind``)."""
        if self._kinds is None:
            self._kinds = dict(self.a.table.value_counts("close_kind")) if self.n else {}
        return self._kinds

    def changes(self) -> C.Changes:
        if self._changes is None:
            st = self.a.stats
            self._changes = C.Changes(self.a.events, st.first_ts_ns or 0, st.last_ts_ns or 0)
        return self._changes

    def events_of(self, conn: int) -> np.ndarray:
        if self._ev_conn is None:
            self._ev_conn = np.ascontiguousarray(self.a.events[:, EV_CONN])
        lo, hi = np.searchsorted(self._ev_conn, [conn, conn + 1])
        return self.a.events[lo:hi]

    def value(self, name: str, row: int):
        """One flow-table value (a plain Python value)."""
        if name not in self._cols:
            self._cols[name] = self.a.table[name]
        v = self._cols[name][row]
        return v.item() if isinstance(v, np.generic) else v


def _overview(caps: list[_Capture]) -> dict:
    firsts = [c.a.stats.first_ts_ns for c in caps if c.a.stats.first_ts_ns is not None]
    lasts = [c.a.stats.last_ts_ns for c in caps if c.a.stats.last_ts_ns is not None]
    roles, kinds = Counter(), Counter()
    for c in caps:
        if len(c.a.table):
            roles.update(c.a.table.value_counts("close_role"))
            kinds.update(c.kinds())
    conns = sum(len(c.a.table) for c in caps)
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
def _rules(report: AuditReport, cols: F.Columns) -> list[dict]:
    out, seen = [], set()
    for r in report.rules:
        seen.add(r.name)
        out.append({"name": r.name, "code": r.code, "title": r.title,
                    "severity": r.severity.label, "rationale": r.rationale,
                    "remediation": r.remediation, "references": list(r.references),
                    "params": report.params.get(r.name, dict(r.thresholds))})
    for name in sorted(set(cols.rule) - seen):      # a finding from a rule not listed
        f = report.findings[cols.rule.index(name)]
        out.append({"name": f.rule, "code": f.code, "title": f.rule, "severity": "",
                    "rationale": "", "remediation": f.remediation, "references": [],
                    "params": {}})
    return out


def _verdict(report: AuditReport, cols: F.Columns) -> dict:
    sev = F.severity_counts(cols)
    failing = sum(n for s, n in sev.items() if s >= report.fail_on)
    return {"failing": failing, "fail_on": report.fail_on.label,
            "by_sev": [(s.label, sev.get(int(s), 0)) for s in sorted(Severity, reverse=True)],
            "suppressed": len(report.suppressed), "unreadable": len(report.unreadable)}


# -- services --------------------------------------------------------------------------------
def _services(caps: list[_Capture], cols: F.Columns, cap_ix: list[int]) -> dict:
    conn = cols.conn_rows
    cix = np.array(cap_ix, np.int64)
    rows = []
    for c in caps:
        st = c.a.stats
        n = len(c.a.table)
        if not n or st.first_ts_ns is None:
            continue
        conns = conn[(cix == c.index) & (conn >= 0) & (conn < n)]
        counts = np.bincount(conns, minlength=n)
        table = C.per_service(c.a.table, c.changes(), st.last_ts_ns, counts)
        for rec in table:
            rec["capture"] = c.name
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
    if cap is not None and conn is not None:
        v = cap.value
        client = _addr(v("client_ip", conn), v("client_port", conn))
        server = _addr(v("server_ip", conn), v("server_port", conn))
        conn_text = f"client {client} → server {server} (tcp.stream {conn})"
        if f.endpoint in ("client", "server"):
            fault = f"{f.endpoint} {client if f.endpoint == 'client' else server}"
        ex = cap.a.excerpts
        if ex is not None and conn < len(ex.count):
            end = (cap.a.stats.last_ts_ns or 0, str(v("client_state", conn)),
                   str(v("server_state", conn)))
            ladder = L.ladder_svg(ex.packets(conn), L.connection_changes(cap.events_of(conn)),
                                  int(ex.count[conn]), client, server, set(f.frames), end)
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


def _ladder_connection(f: Finding, cap: _Capture | None) -> int | None:
    """The connection a finding's ladder shows: its own, else the one holding its first frame."""
    if cap is None or not len(cap.a.table):
        return None
    n = len(cap.a.table)
    if f.connection is not None and 0 <= f.connection < n:
        return int(f.connection)
    conns = f.details.get("connections") if isinstance(f.details, dict) else None
    if isinstance(conns, list) and conns and isinstance(conns[0], int) and 0 <= conns[0] < n:
        return conns[0]
    if not f.frames:
        return None
    fr = f.frames[0]
    flows = cap.a.table
    hit = np.flatnonzero((flows["first_frame"] <= fr) & (flows["last_frame"] >= fr))
    ex = cap.a.excerpts
    for c in hit.tolist():
        if ex is not None and any(p.frame == fr for p in ex.packets(c)):
            return c
    return int(hit[0]) if len(hit) else None


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
