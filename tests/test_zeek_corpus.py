"""Zeek's own answers: ``conn_state`` and ``history`` of our Zeek view against the conn.log rows
Zeek wrote for every trace of ../shared/corpus/zeek (compared as its README says).

Run with ``-s`` to see the agreement overall and per trace and every disagreement, or run this
file as a script: ``python3 tests/test_zeek_corpus.py [TRACE ...]``.
"""

from __future__ import annotations

import csv
import shlex
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import CORPUS, needs_corpus

from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.tracking.zeek import HTTP_PORTS, ZeekConfig

CONN_STATE_MIN = 0.97
HISTORY_MIN = 0.90

#: Protocol scripts a ``-b`` test loads add their ports to likely_server_ports. Only where it
#: matters for a trace: core/tunnels/teredo.zeek diffs http.log, so it loads base/protocols/http.
BARE_MODE_EXTRA_PORTS = {"tunnels.Teredo": HTTP_PORTS}


def zeek_config(manifest_row: dict) -> ZeekConfig:
    """How Zeek ran for this trace: -b (bare) or full scripts, -C or not (MANIFEST.tsv)."""
    flags = set()
    for tok in shlex.split(manifest_row["zeek_cmd"].replace("$", "")):
        if tok.startswith("-") and not tok.startswith("--") and tok[1:].isalpha():
            flags.update(tok[1:])
    ignore = manifest_row["ignore_checksums"] == "yes"
    if "b" in flags:
        return ZeekConfig.bare(ignore_checksums=ignore, likely_server_ports=frozenset(
            BARE_MODE_EXTRA_PORTS.get(manifest_row["name"], frozenset())))
    return ZeekConfig(ignore_checksums=ignore)


@dataclass
class TraceResult:
    name: str
    rows: int = 0                 # expected TCP rows
    cs_rows: int = 0              # ... of which carry a conn_state
    cs_ok: int = 0
    hist_ok: int = 0
    ours: int = 0                 # our Zeek rows
    problems: list[str] = field(default_factory=list)


def _swapcase_hist(h: str) -> str:
    return h.swapcase()


def _norm_hist(h: str) -> str:
    return "" if h == "-" else h


def compare_trace(m: dict) -> TraceResult:
    name = m["name"]
    res = TraceResult(name)
    with open(CORPUS / "expected" / f"{name}.conn.tsv", newline="") as fh:
        exp = [r for r in csv.DictReader(fh, delimiter="\t") if r.get("proto", "tcp") == "tcp"]
    has_cs = bool(exp) and "conn_state" in exp[0]
    a = analyze_capture(CORPUS / m["trace"], ReadOptions(zeek=zeek_config(m)))
    rows = a.zeek_rows.sort_values("start_ts", kind="stable")
    ours = [{"orig": (r.orig_h, str(r.orig_p)), "resp": (r.resp_h, str(r.resp_p)),
             "cs": r.conn_state, "hist": r.history}
            for r in rows.itertuples(index=False)]
    res.rows, res.ours = len(exp), len(ours)
    res.cs_rows = len(exp) if has_cs else 0

    def key(o, r):
        return tuple(sorted([o, r]))

    groups_e: dict = defaultdict(list)
    groups_o: dict = defaultdict(list)
    for r in exp:
        o, p = (r["id.orig_h"], r["id.orig_p"]), (r["id.resp_h"], r["id.resp_p"])
        groups_e[key(o, p)].append({"orig": o, "resp": p, "cs": r.get("conn_state"),
                                    "hist": _norm_hist(r["history"])})
    for r in ours:
        groups_o[key(r["orig"], r["resp"])].append(r)

    def view(e, o):
        """Our row as seen in the expected row's orientation: (conn_state, history, swapped)."""
        if o["orig"] == e["orig"]:
            return o["cs"], o["hist"], False
        return o["cs"], _swapcase_hist(o["hist"]), True

    def fmt(e):
        return f"{e['orig'][0]}:{e['orig'][1]} > {e['resp'][0]}:{e['resp'][1]}"

    for k, es in groups_e.items():
        os_ = list(groups_o.get(k, []))
        pairs = []

        def agrees(e, o, swapped_ok):
            cs, hist, swapped = view(e, o)
            return (swapped_ok or not swapped) and hist == e["hist"] and \
                (not has_cs or cs == e["cs"])

        # Pair identical rows first (a 5-tuple can repeat; same ends before swapped ends),
        # then the rest in time order.
        rest = []
        for e in es:
            hit = next((o for o in os_ if agrees(e, o, False)), None) or \
                next((o for o in os_ if agrees(e, o, True)), None)
            if hit is None:
                rest.append(e)
            else:
                os_.remove(hit)
                pairs.append((e, hit))
        for e in rest:
            pairs.append((e, os_.pop(0) if os_ else None))
        for e, o in pairs:
            if o is None:
                res.problems.append(f"{fmt(e)}: expected {e['cs'] or ''} {e['hist'] or '-'}, "
                                    f"ours: no such connection")
                continue
            cs, hist, swapped = view(e, o)
            cs_good = (not has_cs) or cs == e["cs"]
            h_good = hist == e["hist"]
            res.cs_ok += 1 if (has_cs and cs_good) else 0
            res.hist_ok += 1 if h_good else 0
            if not (cs_good and h_good):
                sw = " (our ends swapped)" if swapped else ""
                res.problems.append(
                    f"{fmt(e)}: expected {e['cs'] or '?'} {e['hist'] or '-'}, "
                    f"ours {o['cs']} {o['hist'] or '-'}{sw}")
        for o in os_:
            res.problems.append(f"extra row of ours {o['orig'][0]}:{o['orig'][1]} > "
                                f"{o['resp'][0]}:{o['resp'][1]} {o['cs']} {o['hist'] or '-'}")
    for k, os_ in groups_o.items():
        if k not in groups_e:
            for o in os_:
                res.problems.append(f"extra row of ours {o['orig'][0]}:{o['orig'][1]} > "
                                    f"{o['resp'][0]}:{o['resp'][1]} {o['cs']} "
                                    f"{o['hist'] or '-'}")
    return res


def manifest(only: list[str] | None = None) -> list[dict]:
    with open(CORPUS / "MANIFEST.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [m for m in rows if not only or m["name"] in only]


def report(results: list[TraceResult]) -> tuple[float, float, str]:
    rows = sum(r.rows for r in results)
    cs_rows = sum(r.cs_rows for r in results)
    cs_ok = sum(r.cs_ok for r in results)
    hist_ok = sum(r.hist_ok for r in results)
    cs = cs_ok / cs_rows if cs_rows else 1.0
    hist = hist_ok / rows if rows else 1.0
    lines = [f"Zeek corpus: {len(results)} traces, {rows} TCP rows ({cs_rows} with conn_state)",
             f"  conn_state equal: {cs_ok}/{cs_rows} = {100 * cs:.2f}%",
             f"  history equal:    {hist_ok}/{rows} = {100 * hist:.2f}%"]
    no_llc = [r for r in results if r.name != "llc"]
    r2 = sum(r.rows for r in no_llc)
    c2 = sum(r.cs_rows for r in no_llc)
    lines.append(f"  without llc ({r2} rows): conn_state "
                 f"{sum(r.cs_ok for r in no_llc)}/{c2}, history "
                 f"{sum(r.hist_ok for r in no_llc)}/{r2}")
    lines.append("per trace (conn_state ok/rows, history ok/rows):")
    for r in results:
        full = r.cs_ok == r.cs_rows and r.hist_ok == r.rows and not r.problems
        lines.append(f"  {'OK  ' if full else 'DIFF'} {r.name}: conn_state {r.cs_ok}/{r.cs_rows} "
                     f"history {r.hist_ok}/{r.rows} (our rows {r.ours})")
    lines.append("every disagreement:")
    for r in results:
        for p in r.problems:
            lines.append(f"  {r.name}: {p}")
    return cs, hist, "\n".join(lines)


@needs_corpus
def test_zeek_conn_state_and_history_agree_with_zeek():
    results = [compare_trace(m) for m in manifest()]
    cs, hist, text = report(results)
    print("\n" + text)
    assert cs >= CONN_STATE_MIN, text
    assert hist >= HISTORY_MIN, text


if __name__ == "__main__":
    if not CORPUS.is_dir():
        sys.exit(f"../shared corpus not present at {CORPUS}")
    print(report([compare_trace(m) for m in manifest(sys.argv[1:] or None)])[2])
