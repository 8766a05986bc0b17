"""``traceaudit compare`` at scale: the synthetic capture against a copy of itself with N random
frames removed (the copy is the far vantage point; every removed frame must be reported,
as dropped or created according to its direction, and nothing else), then against itself.
Prints CPU time and peak RSS of each run (measured from the child process).

    python3 tests/benchmarks/compare_bench.py [bench-data/synthetic-3m.pcap] [--remove 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def without_frames(src: Path, dst: Path, remove: set[int]) -> int:
    """Copy a classic pcap leaving out the frames numbered in ``remove``; returns the frame
    count of ``src``."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        head = f.read(24)
        out.write(head)
        order = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        n = 0
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return n
            incl = struct.unpack(order + "IIII", rec)[2]
            data = f.read(incl)
            n += 1
            if n not in remove:
                out.write(rec + data)


def run(args: list[str]) -> tuple[int, float, float, int]:
    """(exit code, wall s, CPU s, peak RSS MB) of ``traceaudit ARGS`` in a child process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "traceaudit", *args], env=env,
                            stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    return (os.waitstatus_to_exitcode(status), wall, usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss // 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture", nargs="?", default=str(ROOT / "bench-data/synthetic-3m.pcap"))
    ap.add_argument("--remove", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=21)
    opts = ap.parse_args()
    src = Path(opts.capture)
    with tempfile.TemporaryDirectory() as tmp:
        copy, report = Path(tmp) / "far.pcap", Path(tmp) / "compare.json"
        frames = without_frames(src, Path(os.devnull), set())     # (counts the frames)
        remove = set(random.Random(opts.seed).sample(range(1, frames + 1), opts.remove))
        without_frames(src, copy, remove)
        code, wall, cpu, rss = run(["compare", str(src), str(copy), "--json", str(report)])
        doc = json.loads(report.read_text())
        found = {x["frame"] for c in doc["connections"] for kind in ("dropped", "created")
                 for x in c[kind] if x["seen_in"] == "a"}
        other = sum(1 for c in doc["connections"] for kind in ("dropped", "created")
                    for x in c[kind] if x["seen_in"] != "a")
        s = doc["summary"]
        print(f"{src.name} ({frames:,} frames) against a copy without {len(remove):,}: "
              f"exit {code}, {wall:.1f} s wall, {cpu:.1f} s CPU, {rss:,} MB peak")
        print(f"  matched {s['matched']:,} of {doc['captures']['a']['connections']:,} "
              f"connections; reported {s['dropped']:,} dropped + {s['created']:,} created; "
              f"removed frames found {len(found & remove):,}/{len(remove):,}, "
              f"others reported {len(found - remove) + other}")
        code, wall, cpu, rss = run(["compare", str(src), str(src)])
        print(f"{src.name} against itself: exit {code}, {wall:.1f} s wall, {cpu:.1f} s CPU, "
              f"{rss:,} MB peak")
        if found != remove or other:
            sys.exit(1)


if __name__ == "__main__":
    main()
