#!/usr/bin/env python3
"""Peak memory of ``traceaudit analyze --json`` as the capture grows (issue #18: flat memory).

    python3 tests/benchmarks/memory.py [--scales 1 2 10] [--repeat N] [--one-core]
                                       [--keep-generated] [--html]

Each scale F is the synthetic capture of ``bench.py`` (``make_synthetic.py``: 100,000 F
connections over 10 F minutes, so the same connections are open at once; F=1 is 3M packets,
bench-data/synthetic-3m.pcap). For each it prints the peak RSS (the best of --repeat runs),
CPU seconds (user + system) and wall seconds, then the peak at each scale over the peak at
the first, and the issue's targets: 6M ≤ 1.15 × 3M, 30M ≤ 600 MB. Captures it generates are
deleted afterwards unless --keep-generated (30M packets is 3.5 GB). --one-core pins the run
to CPU 0 (taskset). --html measures ``analyze --json --html`` too, as by default (the flat
read: bounded evidence, ``report/html_evidence.py``) and with --no-spill (the read that keeps
every connection), with the ratio of the two peaks between scales. Figures only: it asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import ROOT, count_packets, ensure_synthetic, warm_page_cache  # noqa: E402

TIME = "/usr/bin/time"


def run(cmd: list[str], one_core: bool) -> dict:
    """Peak RSS (MB), CPU and wall seconds of ``cmd`` (GNU time)."""
    if one_core and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    p = subprocess.run([TIME, "-f", "TIME %M %U %S %e", *cmd], cwd=ROOT, capture_output=True,
                       text=True)
    line = [x for x in p.stderr.splitlines() if x.startswith("TIME ")][-1].split()
    return {"peak_mb": int(line[1]) / 1024, "cpu_s": float(line[2]) + float(line[3]),
            "wall_s": float(line[4]), "rc": p.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 10.0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--one-core", action="store_true")
    ap.add_argument("--keep-generated", action="store_true")
    ap.add_argument("--html", action="store_true")
    a = ap.parse_args()
    if not shutil.which(TIME):
        print(f"{TIME} (GNU time) is needed: apt-get install -y time", file=sys.stderr)
        return 2
    ta = [sys.executable, "-m", "traceaudit"]
    modes = {"json": ["--json", os.devnull]}
    if a.html:
        modes["html"] = ["--json", os.devnull, "--html", os.devnull]
        modes["html-kept"] = ["--json", os.devnull, "--html", os.devnull, "--no-spill"]
    rows, generated = [], []
    try:
        for scale in a.scales:
            path, made = ensure_synthetic(scale, a.seed)
            if made:
                generated.append(path)
            packets, _ = count_packets(path)
            for mode, args in modes.items():
                best = None
                for _ in range(a.repeat):
                    warm_page_cache(path)
                    r = run([*ta, "analyze", str(path), *args], a.one_core)
                    if best is None or r["peak_mb"] < best["peak_mb"]:
                        best = r
                rows.append((scale, mode, packets, best))
                print(f"analyze --{mode:<9} {packets:>12,} packets  peak {best['peak_mb']:7.1f} MB"
                      f"  cpu {best['cpu_s']:6.2f} s  wall {best['wall_s']:6.2f} s"
                      + ("" if best["rc"] in (0, 1) else f"  (exit {best['rc']})"), flush=True)
    finally:
        if not a.keep_generated:
            for path in generated:
                path.unlink(missing_ok=True)
                path.with_suffix(".plan.json").unlink(missing_ok=True)
    base = {mode: r["peak_mb"] for s, mode, _, r in rows if s == a.scales[0]}
    for scale, mode, packets, r in rows:
        if scale != a.scales[0] and mode in base:
            print(f"  --{mode}: peak at {scale:g}x / peak at {a.scales[0]:g}x = "
                  f"{r['peak_mb'] / base[mode]:.2f}")
    for scale, mode, packets, r in rows:
        if mode != "json":
            continue
        if scale == 2.0 and 1.0 in a.scales:
            ratio = r["peak_mb"] / base["json"]
            print(f"  [{'MET ' if ratio <= 1.15 else 'MISS'}] #18 peak at 6M <= 1.15 x peak at "
                  f"3M (x{ratio:.2f})")
        if scale == 10.0:
            print(f"  [{'MET ' if r['peak_mb'] <= 600 else 'MISS'}] #18 peak at 30M <= 600 MB "
                  f"({r['peak_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
