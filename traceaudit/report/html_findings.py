"""The HTML report's view of the findings as columns: one pass over the Finding objects
(10,000+ of them), then counts, the choice of detailed findings and the table's data from the
columns. The table data is JSON in the page, deflated and base64-encoded when large."""

from __future__ import annotations

import base64
import threading
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Callable

import numpy as np
import orjson
from markupsafe import Markup

from traceaudit.rules.model import Finding, Severity

INLINE_JSON_LIMIT = 256 * 1024
MAX_FRAMES = 20                # frames per finding carried in the table
_FIELDS = ("severity", "rule", "ts", "capture", "connection", "endpoint", "host", "message",
           "frames", "display_filter")


@dataclass
class Columns:
    sev: list[int]
    rule: list[str]
    ts: list[float]
    capture: list[str]
    conn: list[int | None]
    ep: list[str | None]
    host: list[str | None]
    msg: list[str]
    frames: list[list[int]]
    filt: list[str]

    def __len__(self) -> int:
        return len(self.sev)

    @cached_property
    def conn_rows(self) -> np.ndarray:
        """The findings' connections as an array, -1 for a finding about a host."""
        return np.array([-1 if x is None else x for x in self.conn], np.int64)


def columns(findings: list[Finding]) -> Columns:
    if not findings:
        return Columns(*([] for _ in range(10)))
    cols = [list(map(attrgetter(name), findings)) for name in _FIELDS]
    cols[0] = list(map(int, cols[0]))
    return Columns(*cols)


def severity_counts(c: Columns) -> dict[int, int]:
    return Counter(c.sev)


def rule_counts(c: Columns, rules: list[dict]) -> list[dict]:
    """Per rule, findings per severity label and in all (``pct`` of the largest rule)."""
    counts = Counter(zip(c.rule, c.sev))
    rows = []
    for r in rules:
        row = {s.label: counts.get((r["name"], int(s)), 0) for s in Severity}
        rows.append({**r, **row, "total": sum(row.values())})
    top = max((r["total"] for r in rows), default=0)
    for r in rows:
        r["pct"] = 100.0 * r["total"] / top if top else 0.0
    return rows


def choose_details(c: Columns, cap: int, per_rule: int) -> list[int]:
    """Indices of the findings drawn in full: the most severe first (then capture order), at
    most ``per_rule`` of each rule, ``cap`` in all; returned in severity, rule, time order."""
    neg = [-s for s in c.sev]
    taken: Counter[str] = Counter()
    chosen = []
    for i in sorted(range(len(c)), key=neg.__getitem__):
        if len(chosen) >= cap:
            break
        if taken[c.rule[i]] < per_rule:
            taken[c.rule[i]] += 1
            chosen.append(i)
    chosen.sort(key=lambda i: (neg[i], c.rule[i], c.ts[i]))
    return chosen


def fault_hosts(c: Columns, cap_ix: list[int], flows: list) -> list[str]:
    """The host of each finding: its own, else the address of the endpoint at fault, else the
    server's (``flows[k]``: capture k's flow table, ``Columns``)."""
    host = np.array([h or "" for h in c.host], dtype=object)
    conn = c.conn_rows
    cix = np.array(cap_ix, np.int64)
    client = np.array([e == "client" for e in c.ep], bool)
    empty = host == ""
    for k, table in enumerate(flows):
        sel = np.flatnonzero(empty & (cix == k) & (conn >= 0) & (conn < len(table)))
        if len(sel):
            rows = conn[sel]
            host[sel] = np.where(client[sel], table.at("client_ip", rows),
                                 table.at("server_ip", rows))
    return [str(h) for h in host.tolist()]


def table_data(c: Columns, hosts: list[str], cap_ix: list[int], chosen: list[int],
               rules: list[dict], captures: list[str], first_s: list[float]
               ) -> Callable[[], Markup]:
    """The ``<script>`` element holding the table's data (the page's script reads it), as a
    function to call when it is needed: large data is compressed meanwhile, in a thread
    (zlib releases the GIL), while the rest of the page is drawn."""
    rule_ix = {r["name"]: i for i, r in enumerate(rules)}
    det = [0] * len(c)
    for i in chosen:
        det[i] = 1
    frames = c.frames if max(map(len, c.frames), default=0) <= MAX_FRAMES else \
        [f if len(f) <= MAX_FRAMES else f[:MAX_FRAMES] for f in c.frames]
    filters = c.filt if all(c.filt) else \
        [f or frames_filter(fr) for f, fr in zip(c.filt, frames)]
    rows = {"sev": c.sev, "rule": list(map(rule_ix.__getitem__, c.rule)), "ts": c.ts,
            "cap": cap_ix, "conn": c.conn, "ep": [e or "" for e in c.ep], "host": hosts,
            "msg": c.msg, "frames": frames, "filter": filters, "det": det}
    doc = {"rows": rows, "rules": [[r["code"], r["name"], r["title"]] for r in rules],
           "captures": captures, "first": first_s}
    raw = orjson.dumps(doc)
    if len(raw) <= INLINE_JSON_LIMIT:
        safe = raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
        text = Markup(f'<script type="application/json" id="ta-data">{safe.decode()}</script>')
        return lambda: text
    packed: list[bytes] = []
    worker = threading.Thread(target=lambda: packed.append(zlib.compress(raw, 1)), daemon=True)
    worker.start()

    def result() -> Markup:
        worker.join()
        data = base64.b64encode(packed[0]).decode("ascii")
        return Markup('<script type="application/octet-stream" id="ta-data" '
                      f'data-encoding="deflate-base64">{data}</script>')
    return result


def frames_filter(frames: list[int]) -> str:
    """A display filter for exactly ``frames`` (comma-separated set members: the syntax
    Wireshark 4.x accepts; a space-separated set is refused there)."""
    if not frames:
        return ""
    return "frame.number in {" + ", ".join(str(x) for x in frames) + "}"
