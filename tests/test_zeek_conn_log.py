"""``traceaudit flows --format zeek|zeek-json``: the conn.log, read back the way zeek-cut reads
it, against every conn.log baseline of ../shared/corpus/zeek, row by row; the header's shape;
the JSON lines against the TSV; the byte counts against tshark.

Run with ``-s`` (or as a script: ``python3 tests/test_zeek_conn_log.py [TRACE ...]``) to see the
agreement per field, per trace and overall, and every disagreement.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import CORPUS, ROOT, SAMPLES, needs_corpus, needs_tshark, tshark_fields
from test_zeek_corpus import manifest, zeek_config

from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.report import zeeklog

CONN_STATE_MIN = 0.985          # without llc.pcap (issue 19)
HISTORY_MIN = 0.96
COMPARED = ("conn_state", "history", "orig_pkts", "resp_pkts")
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def parse_zeek_ascii(text: str) -> list[dict]:
    """Read a Zeek ASCII log as zeek-cut does: ``#separator`` first (written with a space,
    the separator escaped), then ``#fields`` maps names to columns; other ``#`` lines are
    skipped; a new header may follow (a concatenation of logs)."""
    sep = None
    fields: list[str] = []
    rows = []
    for line in text.splitlines():
        if line.startswith("#separator "):
            sep = line[len("#separator "):].encode().decode("unicode_escape")
            continue
        assert sep is not None, "a Zeek log starts with #separator"
        if line.startswith("#"):
            tag, _, rest = line.partition(sep)
            if tag == "#fields":
                fields = rest.split(sep)
            continue
        values = line.split(sep)
        assert len(values) == len(fields), line
        rows.append(dict(zip(fields, values)))
    return rows


def conn_log(m: dict, fmt: str = "zeek") -> str:
    """What ``flows --format zeek`` writes for a corpus trace, run as Zeek ran for it."""
    a = analyze_capture(CORPUS / m["trace"], ReadOptions(zeek=zeek_config(m)))
    logs = [zeeklog.ZeekLog(str(CORPUS / m["trace"]), a.zeek_table, WHEN)]
    render = zeeklog.render_tsv if fmt == "zeek" else zeeklog.render_json
    return b"".join(render(logs)).decode()


@dataclass
class Agreement:
    name: str
    rows: int = 0
    ours: int = 0
    ok: dict = field(default_factory=lambda: {f: 0 for f in COMPARED})
    had: dict = field(default_factory=lambda: {f: 0 for f in COMPARED})   # rows with the field
    problems: list[str] = field(default_factory=list)


def _ends(r: dict) -> tuple:
    return (r["id.orig_h"], r["id.orig_p"]), (r["id.resp_h"], r["id.resp_p"])


def _oriented(exp: dict, ours: dict) -> dict:
    """Our row seen in the baseline row's orientation (swapped ends: history case-inverted,
    packet counts exchanged), as the corpus README says to compare."""
    view = {"conn_state": ours["conn_state"],
            "history": "" if ours["history"] == "-" else ours["history"],
            "orig_pkts": ours["orig_pkts"], "resp_pkts": ours["resp_pkts"]}
    if _ends(ours)[0] != _ends(exp)[0]:
        view["history"] = view["history"].swapcase()
        view["orig_pkts"], view["resp_pkts"] = view["resp_pkts"], view["orig_pkts"]
    return view


def compare(m: dict) -> Agreement:
    res = Agreement(m["name"])
    with open(CORPUS / "expected" / f"{m['name']}.conn.tsv", newline="") as fh:
        exp = [r for r in csv.DictReader(fh, delimiter="\t") if r.get("proto", "tcp") == "tcp"]
    ours = [r for r in parse_zeek_ascii(conn_log(m)) if r["proto"] == "tcp"]
    res.rows, res.ours = len(exp), len(ours)
    groups_e, groups_o = defaultdict(list), defaultdict(list)
    for r in exp:
        r = dict(r, history="" if r["history"] == "-" else r["history"])
        groups_e[tuple(sorted(_ends(r)))].append(r)
    for r in ours:                                  # (already in ts order)
        groups_o[tuple(sorted(_ends(r)))].append(r)

    def fields_of(e):       # (an empty history is Zeek's '-': compared like any other)
        return [f for f in COMPARED if f in e and (e[f] != "" or f == "history")]

    def same(e, o):
        v = _oriented(e, o)
        return all(v[f] == e[f] for f in fields_of(e))

    for key, es in groups_e.items():
        os_ = list(groups_o.pop(key, []))
        pairs, rest = [], []
        for e in es:        # identical rows first (same ends before swapped), then time order
            hit = next((o for o in os_ if _ends(o) == _ends(e) and same(e, o)), None) or \
                next((o for o in os_ if same(e, o)), None)
            if hit is None:
                rest.append(e)
            else:
                os_.remove(hit)
                pairs.append((e, hit))
        pairs += [(e, os_.pop(0) if os_ else None) for e in rest]
        for e, o in pairs:
            fs = fields_of(e)
            for f in fs:
                res.had[f] += 1
            where = f"{e['id.orig_h']}:{e['id.orig_p']} > {e['id.resp_h']}:{e['id.resp_p']}"
            if o is None:
                res.problems.append(f"{where}: no row of ours")
                continue
            v = _oriented(e, o)
            bad = [f for f in fs if v[f] != e[f]]
            for f in fs:
                res.ok[f] += f not in bad
            if bad:
                res.problems.append(f"{where}: " + ", ".join(
                    f"{f} Zeek {e[f] or '-'} ours {v[f] or '-'}" for f in bad))
        for o in os_:
            res.problems.append(f"extra row of ours {o['uid']} {o['conn_state']} {o['history']}")
    for os_ in groups_o.values():
        for o in os_:
            res.problems.append(f"extra row of ours {o['id.orig_h']}:{o['id.orig_p']} > "
                                f"{o['id.resp_h']}:{o['id.resp_p']} {o['conn_state']} "
                                f"{o['history']}")
    return res


def report(results: list[Agreement]) -> tuple[dict, str]:
    """Shares per field over all rows and without llc.pcap, the text to print."""
    lines = [f"Zeek conn.log (flows --format zeek, parsed as zeek-cut does) vs the corpus: "
             f"{len(results)} traces"]
    shares = {}
    for label, part in (("all traces", results),
                        ("without llc.pcap", [r for r in results if r.name != "llc"])):
        lines.append(f"  {label}: {sum(r.rows for r in part)} baseline rows, "
                     f"{sum(r.ours for r in part)} of ours")
        for f in COMPARED:
            ok, had = sum(r.ok[f] for r in part), sum(r.had[f] for r in part)
            share = ok / had if had else 1.0
            shares[(label, f)] = share
            lines.append(f"    {f:<10} {ok}/{had} = {100 * share:.2f}%")
    lines.append("per trace (conn_state, history, orig_pkts, resp_pkts: equal/rows):")
    for r in results:
        full = all(r.ok[f] == r.had[f] for f in COMPARED) and not r.problems
        lines.append(f"  {'OK  ' if full else 'DIFF'} {r.name}: " + " ".join(
            f"{r.ok[f]}/{r.had[f]}" for f in COMPARED) + f" (rows {r.rows}, ours {r.ours})")
    lines.append("every disagreement:")
    lines += [f"  {r.name}: {p}" for r in results for p in r.problems]
    return shares, "\n".join(lines)


@needs_corpus
def test_conn_log_agrees_with_zeek_row_by_row():
    shares, text = report([compare(m) for m in manifest()])
    print("\n" + text)
    assert shares[("without llc.pcap", "conn_state")] >= CONN_STATE_MIN, text
    assert shares[("without llc.pcap", "history")] >= HISTORY_MIN, text


@needs_corpus
def test_header_is_zeeks_and_json_lines_match_the_tsv():
    m = next(r for r in manifest() if r["name"] == "ssh.client-side-half-duplex") \
        if (CORPUS / "expected" / "ssh.client-side-half-duplex.conn.tsv").exists() \
        else manifest()[0]
    text = conn_log(m)
    lines = text.splitlines()
    assert lines[0] == "#separator \\x09"
    head = {ln.split("\t", 1)[0]: ln.split("\t", 1)[1] for ln in lines[1:8]}
    assert list(head) == ["#set_separator", "#empty_field", "#unset_field", "#path", "#open",
                          "#fields", "#types"]
    assert head["#set_separator"] == "," and head["#empty_field"] == "(empty)"
    assert head["#unset_field"] == "-" and head["#path"] == "conn"
    assert datetime.strptime(head["#open"], "%Y-%m-%d-%H-%M-%S")
    assert lines[-1].startswith("#close\t") and datetime.strptime(lines[-1][7:],
                                                                  "%Y-%m-%d-%H-%M-%S")
    names, types = head["#fields"].split("\t"), head["#types"].split("\t")
    assert names == [n for n, _ in zeeklog.CONN_LOG_FIELDS]
    assert types == [t for _, t in zeeklog.CONN_LOG_FIELDS] and len(types) == len(names)
    assert names[:2] == ["ts", "uid"] and names[-2:] == ["ip_proto", "tcp_stream"]
    rows = parse_zeek_ascii(text)
    assert rows
    for r in rows:          # each value reads as its declared type
        for name, kind in zip(names, types):
            v = r[name]
            if v == "-":
                assert name in ("service", "duration", "orig_bytes", "resp_bytes",
                                "local_orig", "local_resp", "history", "tunnel_parents"), name
            elif kind in ("count", "port"):
                assert v.isdigit(), (name, v)
            elif kind in ("time", "interval"):
                whole, frac = v.split(".")
                assert whole.lstrip("-").isdigit() and len(frac) == 6, (name, v)
        assert r["uid"].startswith("C") and 2 < len(r["uid"]) <= 23 and r["uid"].isalnum()
        assert r["proto"] == "tcp" and r["ip_proto"] == "6"
    assert [r["ts"] for r in rows] == sorted((r["ts"] for r in rows), key=float)
    assert len({r["uid"] for r in rows}) == len(rows)
    # JSON: one object per line, the TSV's values, unset fields left out
    js = [json.loads(line) for line in conn_log(m, "zeek-json").splitlines()]
    assert len(js) == len(rows)
    for j, r in zip(js, rows):
        assert list(j) == [n for n in names if r[n] != "-"]
        for name, kind in zip(names, types):
            if r[name] == "-":
                continue
            if kind in ("time", "interval"):
                assert f"{j[name]:.6f}" == r[name]
            elif kind in ("count", "port"):
                assert j[name] == int(r[name])
            else:
                assert j[name] == r[name]
    # the same capture gives the same uids
    assert parse_zeek_ascii(conn_log(m))[0]["uid"] == rows[0]["uid"]


def test_json_doubles_are_written_as_zeek_writes_them():
    assert zeeklog.json_double(1529347003.860008) == "1529347003.860008"
    assert zeeklog.json_double(0.000015) == "0.000015"      # Python: 1.5e-05
    assert zeeklog.json_double(1e-7) == "1e-7"
    assert zeeklog.json_double(100.0) == "100.0"
    assert zeeklog.json_double(0.0) == "0.0"
    assert zeeklog.json_double(2.5) == "2.5"


def test_cli_writes_a_zeek_log(tmp_path):
    capture = SAMPLES / "client-fin-no-server-fin.pcap"
    if not capture.exists():
        capture = next(SAMPLES.glob("*.pcap"))
    out = tmp_path / "conn.log"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    for fmt, target in (("zeek", out), ("zeek-json", tmp_path / "conn.json")):
        done = subprocess.run([sys.executable, "-m", "traceaudit", "flows", str(capture),
                               "--format", fmt, "-o", str(target)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    rows = parse_zeek_ascii(out.read_text())
    assert rows and all(r["tcp_stream"].isdigit() for r in rows)
    assert len((tmp_path / "conn.json").read_text().splitlines()) == len(rows)
    if shutil.which("zeek-cut"):
        cut = subprocess.run(["zeek-cut", "uid", "conn_state", "tcp_stream"],
                             input=out.read_text(), capture_output=True, text=True, check=True)
        assert [ln.split("\t") for ln in cut.stdout.splitlines()] == \
            [[r["uid"], r["conn_state"], r["tcp_stream"]] for r in rows]


# --- byte counts against tshark ------------------------------------------------------------

def _oracle_captures() -> list[Path]:
    return sorted(SAMPLES.glob("*.pcap"))[:6]


@needs_tshark
@pytest.mark.parametrize("capture", _oracle_captures(), ids=lambda p: p.name)
def test_byte_counts_agree_with_tshark(capture):
    """Where one Zeek connection is one tcp.stream with a handshake (the sample captures):
    orig/resp_ip_bytes = the sum of ip.len per direction; orig/resp_bytes = the highest
    relative sequence number reached (tcp.seq + tcp.len, or the peer's highest ack) minus
    the SYN and FIN octets; missed_bytes = 0 (nothing is lost in these captures)."""
    a = analyze_capture(capture)
    rows = list(zeeklog.conn_records(zeeklog.ZeekLog(str(capture), a.zeek_table, WHEN)))
    pk = tshark_fields(capture, ["tcp.stream", "ip.src", "tcp.srcport", "ip.len", "tcp.seq",
                                 "tcp.len", "tcp.ack", "tcp.flags.syn", "tcp.flags.fin",
                                 "tcp.flags.ack"], "tcp", ["-o", "tcp.relative_sequence_numbers:TRUE"])
    per_stream: dict = defaultdict(list)
    for f in pk:
        per_stream[int(f[0])].append(f)
    by_stream = defaultdict(list)
    for r in rows:
        by_stream[r["tcp_stream"]].append(r)
    checked = 0
    for sid, zr in by_stream.items():
        if len(zr) != 1 or zr[0]["history"] is None or not zr[0]["history"].startswith("S"):
            continue        # Zeek split the stream, or no handshake seen: not this oracle's case
        r = zr[0]
        frames = per_stream[sid]
        orig = (r["id.orig_h"], str(r["id.orig_p"]))
        sent = {True: [], False: []}
        for f in frames:
            sent[(f[1], f[2]) == orig].append(f)
        assert r["orig_ip_bytes"] == sum(int(f[3]) for f in sent[True])
        assert r["resp_ip_bytes"] == sum(int(f[3]) for f in sent[False])
        assert r["orig_pkts"] == len(sent[True]) and r["resp_pkts"] == len(sent[False])
        assert r["missed_bytes"] == 0
        if r["duration"] is None:
            continue
        for side, peer, key in ((True, False, "orig_bytes"), (False, True, "resp_bytes")):
            if not sent[side]:
                continue
            top = max(int(f[4]) + int(f[5]) + int(f[7]) + int(f[8]) for f in sent[side])
            acked = max((int(f[6]) for f in sent[peer] if f[9] == "1"), default=0)
            size = max(top, acked)
            size -= 1 if size else 0                        # the SYN octet
            if any(f[8] == "1" for f in sent[side]) and size:
                size -= 1                                   # the FIN octet
            assert r[key] == size, (sid, key, r[key], size)
        checked += 1
    assert checked, "no connection of the capture was a single Zeek row with a handshake"


if __name__ == "__main__":
    if not CORPUS.is_dir():
        sys.exit(f"../shared corpus not present at {CORPUS}")
    print(report([compare(m) for m in manifest(sys.argv[1:] or None)])[1])
