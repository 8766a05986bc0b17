#!/usr/bin/env python3
"""Every conn.log field of ``flows --format zeek`` against the full conn.log baselines in a
checkout of Zeek's own repository (the corpus keeps only conn_state, history and the packet
counts; Zeek's baselines also have duration, the byte counts and missed_bytes).

    python3 tests/zeek_repo_fields.py /path/to/zeek        # a git checkout of zeek/zeek

For each corpus trace whose MANIFEST ``baseline_kind`` is ``conn.log``, the baseline is read from
the checkout's HEAD (``git show HEAD:<baseline>``), its TCP rows are matched to ours on the
4-tuple (rows with the same conn_state and history first), and every field is compared as text.
Not a test: the checkout is not part of this project. Figures: docs/zeek-compat.md.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_zeek_conn_log import conn_log, manifest, parse_zeek_ascii

FIELDS = ["duration", "orig_bytes", "resp_bytes", "missed_bytes", "orig_pkts", "orig_ip_bytes",
          "resp_pkts", "resp_ip_bytes", "conn_state", "history", "service", "tunnel_parents"]


def baseline_rows(repo: str, path: str) -> list[dict] | None:
    done = subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], capture_output=True,
                          text=True)
    if done.returncode:
        return None
    # btest scrubs #open/#close to "XXXX-..." with a space; its first line is a comment
    lines = [ln.replace("#open ", "#open\t").replace("#close ", "#close\t")
             for ln in done.stdout.splitlines() if not ln.startswith("### ")]
    rows = [r for r in parse_zeek_ascii("\n".join(lines)) if r.get("proto") == "tcp"]
    return rows if rows and "duration" in rows[0] else None


def main(repo: str, skip: tuple[str, ...] = ()) -> None:
    ok, had, problems, traces = Counter(), Counter(), [], 0
    for m in manifest():
        if m["baseline_kind"] != "conn.log" or m["name"] in skip:
            continue
        base = baseline_rows(repo, m["baseline"])
        if base is None:
            continue
        traces += 1
        ours = defaultdict(list)
        for o in parse_zeek_ascii(conn_log(m)):
            ours[(o["id.orig_h"], o["id.orig_p"], o["id.resp_h"], o["id.resp_p"])].append(o)
        for b in base:
            key = (b["id.orig_h"], b["id.orig_p"], b["id.resp_h"], b["id.resp_p"])
            cand = ours.get(key)
            if not cand:
                problems.append(f"{m['name']}: {key}: no row of ours")
                for f in FIELDS:
                    had[f] += f in b
                continue
            o = next((c for c in cand if (c["history"], c["conn_state"]) ==
                      (b["history"], b["conn_state"])), cand[0])
            cand.remove(o)
            for f in FIELDS:
                if f in b:
                    had[f] += 1
                    ok[f] += b[f] == o[f]
                    if b[f] != o[f]:
                        problems.append(f"{m['name']}: {key}: {f} Zeek {b[f]} ours {o[f]}")
    print(f"{traces} traces with a full conn.log baseline, {had['conn_state']} TCP rows")
    for f in FIELDS:
        print(f"  {f:<15} {ok[f]}/{had[f]}")
    if problems:
        print("\n".join(problems))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
    print("\nwithout llc.pcap:")
    main(sys.argv[1], skip=("llc",))
