"""The HTML report's view of the findings: one pass over them (hundreds of thousands, maybe
parked on a flat read) gives the counts and, per rule, the findings the table lists and the
page draws; the table data is JSON in the page, deflated and base64-encoded when large."""

from __future__ import annotations

import base64
import heapq
import threading
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import orjson
from markupsafe import Markup

from traceaudit.rules.model import Severity

INLINE_JSON_LIMIT = 256 * 1024
MAX_FRAMES = 20                # frames per finding carried in the table


#: The findings table lists at most this many findings of each rule (the most severe first,
#: then in the report's order); the page says how many of how many it lists
LIST_PER_RULE = 1000


@dataclass
class Summary:
    """The findings as the page needs them, from one pass over them (however many: a flat
    read's parked findings are read once): counts, and per rule the first ``LIST_PER_RULE``
    by severity then order, listed (``listed``: (index, finding), in order)."""

    n: int
    sev: Counter                       # severity -> findings
    rule_sev: Counter                  # (rule, severity) -> findings
    cap_sev: Counter                   # (capture index, severity) -> findings
    first_of_rule: dict                # rule -> its first finding (rules not in the run)
    listed: list                       # (index, finding, capture index), in index order
    own_hosts: Counter                 # findings per host they name themselves
    per_capture: dict                  # capture index -> (connections, host_from) arrays


def summarize(findings, cap_index: dict, list_per_rule: int = LIST_PER_RULE) -> Summary:
    """One pass over ``findings`` (``cap_index``: capture path -> index, -1 not in the run)."""
    from array import array

    from traceaudit.report.html_evidence import CLIENT, SERVER
    counts: dict[tuple, int] = {}          # (rule, severity, capture index) -> findings
    first_of_rule: dict = {}
    heaps: dict[str, list] = {}
    own_hosts: Counter = Counter()
    per_capture: dict = {}
    n = 0
    path, cap = None, -1
    side = {"client": CLIENT}
    for i, f in enumerate(findings):
        n += 1
        s = int(f.severity)
        if f.capture != path:               # (findings come a capture at a time)
            path = f.capture
            cap = cap_index.get(path, -1)
            conns, host_from = per_capture.setdefault(cap, (array("q"), array("B")))
        rule = f.rule
        key = (rule, s, cap)
        counts[key] = counts.get(key, 0) + 1
        heap = heaps.get(rule)
        if heap is None:
            first_of_rule[rule] = f
            heap = heaps[rule] = []
        # keep the list_per_rule smallest (-severity, index): evict the largest
        if len(heap) < list_per_rule:
            heapq.heappush(heap, (s, -i, f, cap))
        elif (s, -i) > heap[0][:2]:
            heapq.heapreplace(heap, (s, -i, f, cap))
        conns.append(-1 if f.connection is None else f.connection)
        if f.host:
            own_hosts[f.host] += 1
            host_from.append(0)
        else:
            host_from.append(side.get(f.endpoint, SERVER))
    sev, rule_sev, cap_sev = Counter(), Counter(), Counter()
    for (rule, s, c), k in counts.items():
        sev[s] += k
        rule_sev[(rule, s)] += k
        cap_sev[(c, s)] += k
    listed = sorted(((-e[1], e[2], e[3]) for heap in heaps.values() for e in heap),
                    key=lambda t: t[0])
    per_capture = {k: (np.frombuffer(c, np.int64) if len(c) else np.zeros(0, np.int64),
                       np.frombuffer(h, np.uint8) if len(h) else np.zeros(0, np.uint8))
                   for k, (c, h) in per_capture.items()}
    return Summary(n, sev, rule_sev, cap_sev, first_of_rule, listed, own_hosts, per_capture)


def rule_counts(s: Summary, rules: list[dict]) -> list[dict]:
    """Per rule, findings per severity label and in all (``pct`` of the largest rule), and
    how many the table lists."""
    listed = Counter(f.rule for _, f, _ in s.listed)
    rows = []
    for r in rules:
        row = {sv.label: s.rule_sev.get((r["name"], int(sv)), 0) for sv in Severity}
        rows.append({**r, **row, "total": sum(row.values()), "listed": listed[r["name"]]})
    top = max((r["total"] for r in rows), default=0)
    for r in rows:
        r["pct"] = 100.0 * r["total"] / top if top else 0.0
    return rows


def choose_details(s: Summary, cap: int, per_rule: int) -> list[int]:
    """Positions in ``s.listed`` of the findings drawn in full: the most severe first (then
    the report's order), at most ``per_rule`` of each rule, ``cap`` in all; returned in
    severity, rule, time order. (The listed findings are each rule's first by that order, so
    these are the choice over all findings.)"""
    taken: Counter[str] = Counter()
    chosen = []
    for k in sorted(range(len(s.listed)), key=lambda k: -s.listed[k][1].severity):
        if len(chosen) >= cap:
            break
        f = s.listed[k][1]
        if taken[f.rule] < per_rule:
            taken[f.rule] += 1
            chosen.append(k)
    chosen.sort(key=lambda k: (-s.listed[k][1].severity, s.listed[k][1].rule,
                               s.listed[k][1].ts))
    return chosen


def table_data(s: Summary, hosts: list[str], chosen: list[int], rules: list[dict],
               captures: list[str], first_s: list[float]) -> Callable[[], Markup]:
    """The ``<script>`` element holding the table's data (the listed findings; ``hosts``: the
    host of each; the page's script reads it), as a function to call when it is needed: large
    data is compressed meanwhile, in a thread (zlib releases the GIL), while the rest of the
    page is drawn."""
    rule_ix = {r["name"]: i for i, r in enumerate(rules)}
    det = [0] * len(s.listed)
    for k in chosen:
        det[k] = 1
    fs = [f for _, f, _ in s.listed]
    frames = [f.frames if len(f.frames) <= MAX_FRAMES else f.frames[:MAX_FRAMES] for f in fs]
    rows = {"sev": [int(f.severity) for f in fs], "rule": [rule_ix[f.rule] for f in fs],
            "ts": [f.ts for f in fs], "cap": [c for _, _, c in s.listed],
            "conn": [f.connection for f in fs], "ep": [f.endpoint or "" for f in fs],
            "host": hosts, "msg": [f.message for f in fs], "frames": frames,
            "filter": [f.display_filter or frames_filter(fr) for f, fr in zip(fs, frames)],
            "det": det, "id": [i for i, _, _ in s.listed]}
    doc = {"rows": rows, "rules": [[r["code"], r["name"], r["title"]] for r in rules],
           "captures": captures, "first": first_s, "all": s.n}
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
