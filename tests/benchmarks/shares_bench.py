#!/usr/bin/env python3
"""One capture, one process against N share workers (traceaudit.parallel.shares) + merge.

    python3 tests/benchmarks/shares_bench.py [--capture PCAP] [--shares 2] [--repeat 3]

Runs ``traceaudit flows --format csv`` and ``traceaudit analyze --json`` end to end, each as a
fresh process: once as they are (one read), once with every capture read by N worker
processes (a forkserver ``ProcessPoolExecutor``, as ``--jobs`` would) and merged. Prints wall
and CPU time (the process and its workers) of each run, interleaved, the best of each, and
checks that the outputs are byte-identical (``generated_at`` aside).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "bench-data" / "synthetic-3m.pcap"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _share_worker(path, options, k, n, slim):
    from dataclasses import replace

    from traceaudit.parallel.shares import analyze_share
    cpu = _cpu()
    # as many workers as cores: no core is left for a decoding thread beside each
    a = analyze_share(path, replace(options, read_ahead=False), k, n, csv=slim)
    if slim:                                  # flows: only the flow table leaves the worker
        from traceaudit.audit import slimmed
        a = slimmed(a, keep_excerpts=False, keep_events=False)
    return a, _cpu() - cpu


def _forkserver_cpu() -> float:
    """CPU seconds the forkserver process has used (0 when unknown)."""
    from multiprocessing import forkserver
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_cli_in_shares(n: int, argv: list[str]) -> int:
    """``traceaudit ARGV`` with every capture read as ``n`` shares by a worker pool."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["traceaudit.parallel.shares", "traceaudit.audit",
                                "traceaudit.tracking.connections", "traceaudit.report.flows",
                                "pyarrow.csv"])
    pool = ProcessPoolExecutor(n, mp_context=ctx)
    # start the forkserver and the workers now, while this process imports the CLI
    primed = [pool.submit(_cpu) for _ in range(n)]
    from traceaudit import cli
    from traceaudit.capture import CaptureSet
    from traceaudit.capture.chain import remainder
    from traceaudit.parallel.shares import merge_shares
    slim = argv[0] == "flows"

    def analyze_captures(paths, options, progress=None):
        for path in paths:
            while path is not None:
                t = time.perf_counter()
                futures = [pool.submit(_share_worker, path, options, k, n, slim)
                           for k in range(n)]
                done = [f.result() for f in futures]
                worker_cpu.extend(c for _, c in done)
                t1 = time.perf_counter()
                analysis = merge_shares([a for a, _ in done])
                phases.append(f"workers+transfer {t1 - t:.2f} s, merge "
                              f"{time.perf_counter() - t1:.2f} s")
                yield analysis
                path = remainder(path, analysis.stats) if isinstance(path, CaptureSet) \
                    else None

    worker_cpu: list[float] = []
    phases: list[str] = []
    cli.analyze_captures = analyze_captures
    del primed
    try:
        cli.main(argv, standalone_mode=True)
    except SystemExit as exc:
        return exc.code or 0
    finally:
        server = _forkserver_cpu()
        pool.shutdown()
        # the workers are the forkserver's children, not ours: their CPU time is told here,
        # and the forkserver's own (its start: Python and the preloaded imports)
        with open(os.environ["SHARES_BENCH_REPORT"], "w") as f:
            f.write(f"{' '.join(map(str, worker_cpu))}\n{'; '.join(phases)}\n{server}\n")
    return 0


def timed(cmd: list[str], report: Path) -> tuple[float, float, float, str]:
    """Wall time, CPU time of the process (and of the forkserver) and of its busiest worker,
    and what it reported."""
    report.write_text("\n\n0\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL,
                   env={**os.environ, "SHARES_BENCH_REPORT": str(report)})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    workers, phases, server = report.read_text().split("\n")[:3]
    return wall, cpu + float(server), max(map(float, workers.split()), default=0.0), phases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, default=DEFAULT)
    ap.add_argument("--shares", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("/tmp/traceaudit-shares-bench"))
    ap.add_argument("--run-in-shares", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run_in_shares is not None:
        return run_cli_in_shares(a.shares, a.run_in_shares)
    a.out.mkdir(parents=True, exist_ok=True)
    commands = {
        "flows --format csv": ["flows", str(a.capture), "--format", "csv", "-o"],
        "analyze --json": ["analyze", str(a.capture), "--exit-zero", "--json"],
    }
    me = [sys.executable, __file__, "--shares", str(a.shares), "--run-in-shares"]
    # per (command, mode): best wall, and best critical path in CPU seconds: the process's
    # own CPU time (and the forkserver's start) plus its busiest worker's: about the wall
    # time on idle cores (a little more: the parent's imports overlap the forkserver's
    # start); on a loaded machine the wall times mean little
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for _ in range(a.repeat):
        for name, args in commands.items():
            for mode, base in (("one", [sys.executable, "-m", "traceaudit"]), ("shares", me)):
                out = a.out / f"{mode}-{name.split()[0]}.out"
                wall, cpu, worker, phases = timed(base + args + [str(out)], a.out / "report")
                path = cpu + worker
                print(f"{name:20} {mode:6} wall {wall:5.2f} s  cpu: process {cpu:5.2f} s, "
                      f"busiest worker {worker:5.2f} s, path {path:5.2f} s  "
                      f"load {os.getloadavg()[0]:.1f}  {phases}", flush=True)
                b = best.get((name, mode))
                best[(name, mode)] = (min(wall, b[0]), min(path, b[1])) if b else (wall, path)
    for name in commands:
        one, sh = best[(name, "one")], best[(name, "shares")]
        kind = name.split()[0]
        same = [re.sub(rb'"generated_at":"[^"]*"', b"", (a.out / f"{m}-{kind}.out").read_bytes())
                for m in ("one", "shares")]
        print(f"best {name:20} one: wall {one[0]:.2f} s, cpu path {one[1]:.2f} s;  "
              f"{a.shares} shares: wall {sh[0]:.2f} s, cpu path {sh[1]:.2f} s;  speed-up "
              f"wall {one[0] / sh[0]:.2f}x, cpu path {one[1] / sh[1]:.2f}x;  "
              f"outputs {'identical' if same[0] == same[1] else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
