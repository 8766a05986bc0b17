#!/usr/bin/env python3
"""``--jobs 2`` against ``--jobs 1``: a batch of captures, and one large capture.

    python3 tests/benchmarks/parallel.py [--files 8] [--connections 50000] [--repeat 3]
                                         [--jobs 2] [--large] [--large-connections N]
                                         [--json OUT]

The batch is ``--files`` synthetic captures (``make_synthetic.py``, seeds 1..N, each
``--connections`` connections, as dense as the 3M-packet capture) in ``bench-data/parallel/``;
``--large`` also times one capture of ``--large-connections`` connections (200,000 by
default: ~6M packets, 667 MiB, as the issue's memory benchmark; 100,000 is the 3M-packet
capture), which ``--jobs 2`` splits across the workers by flow hash
(the benchmark sets ``TRACEAUDIT_SPLIT_MIN_BYTES``: the split is off by default). Each is timed twice: ``traceaudit analyze``
with its terminal summary alone, and with ``--json OUT`` too (the JSON report of every
connection and its timeline is written by one process, after the workers: the part that does
not get faster). Runs alternate between the job counts (A B A B ...) so that other load on the
machine falls on both alike, and every JSON report must equal the first one's
(``generated_at`` aside).

Figures per run: wall time; CPU time (user + system) of the whole process tree, worker
processes included (this helper is a child subreaper, so orphaned workers are reaped and
counted here); the *CPU path* (sampled from /proc every 50 ms), the busiest process's CPU
time for a batch (the parent reads captures beside its workers), the parent's plus its
busiest worker's for the split (it merges after them), a bound on the wall time on idle
cores; and the load average before the run. The speed-up is the ratio of median wall times.
`--jobs 1` is one core (no read-ahead thread). The batch without ``--json`` is also timed as
``--jobs`` independent ``--jobs 1`` processes on their shares of the captures, started
together: the most any splitting of the batch can give on this machine (both cores busy slow
each read: memory traffic). On a machine where other work runs, give the
benchmark priority (``nice -n -20``, with ``kernel.sched_autogroup_enabled=0`` so that nice
counts across sessions). Nothing is asserted: the figures are printed (and go to
docs/performance.md by hand).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT / "bench-data" / "parallel"
PR_SET_CHILD_SUBREAPER = 36


def make(path: Path, connections: int, seed: int, duration: float) -> Path:
    if not path.exists():
        subprocess.run([sys.executable, str(HERE / "make_synthetic.py"), str(path),
                        "--connections", str(connections), "--seed", str(seed),
                        "--duration", str(duration), "-q"], check=True)
    return path


def cpu_of_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def reap_orphans() -> None:
    """Wait for every descendant this subreaper inherited (their CPU time counts then)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


class TreeCpu(threading.Thread):
    """CPU seconds of every process below ``root``, sampled from /proc until stopped.

    The known processes are read every 50 ms; the whole of /proc is scanned for new ones
    every 10th time only. (Scanning all of /proc every 20 ms took ~9% of a core, which a
    ``--jobs 2`` run on 2 cores lost and the independent runs did not; this takes ~1%.)"""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.cpu, self.done = root, {}, threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")

    def _stat(self, pid: int) -> list[str] | None:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None

    def _tree(self) -> set[int]:
        parents = {}
        for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
            fields = self._stat(pid)
            if fields is not None:
                parents[pid] = int(fields[1])
        tree = set()
        for pid in parents:
            p = pid
            while p in parents and p != self.root:
                p = parents[p]
            if p == self.root:
                tree.add(pid)
        return tree

    def run(self) -> None:
        known: set[int] = set()
        samples = 0
        while not self.done.wait(0.05):
            if samples % 10 == 0:
                known |= self._tree()
            samples += 1
            for pid in list(known):
                fields = self._stat(pid)
                if fields is None:
                    known.discard(pid)
                    continue
                value = (int(fields[11]) + int(fields[12])) / self.tick
                self.cpu[pid] = max(value, self.cpu.get(pid, 0.0))

    def path(self, serial_root: bool) -> float:
        """The busiest process's CPU: with --jobs N the root reads captures beside its
        workers; ``serial_root`` (the split by flow hash): the root's work comes after its
        workers', so the root's CPU plus its busiest descendant's."""
        others = [v for pid, v in self.cpu.items() if pid != self.root]
        root = self.cpu.get(self.root, 0.0)
        return root + max(others, default=0.0) if serial_root else max([root, *others])


def timed(captures: list[Path], jobs: int, out: Path | None, split: bool) -> dict:
    load = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "traceaudit", "analyze", *map(str, captures), "--jobs",
           str(jobs), *(["--json", str(out)] if out else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if split:
        env["TRACEAUDIT_SPLIT_MIN_BYTES"] = "1"
    cpu0, t0 = cpu_of_children(), time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tree = TreeCpu(proc.pid)
    tree.start()
    _, stderr = proc.communicate()
    tree.done.set()
    tree.join()
    reap_orphans()
    wall, cpu = time.perf_counter() - t0, cpu_of_children() - cpu0
    if proc.returncode not in (0, 1):
        sys.exit(f"traceaudit failed ({proc.returncode}): {stderr.decode()}")
    doc = json.loads(out.read_text()) if out else None
    if doc:
        doc.pop("generated_at")
    return {"jobs": jobs, "wall": wall, "cpu": cpu, "path": tree.path(serial_root=split), "load": load,
            "doc": doc}


def independent(captures: list[Path], jobs: int) -> dict:
    """The ceiling of splitting the batch: ``jobs`` independent one-core runs (``--jobs 1``),
    each on its share of the captures, started together; wall time until the last ends."""
    load = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shares = [captures[k::jobs] for k in range(jobs)]
    cpu0, t0 = cpu_of_children(), time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "traceaudit", "analyze", *map(str, part),
                               "--jobs", "1"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for part in shares]
    for proc in procs:
        proc.wait()
    reap_orphans()
    return {"wall": time.perf_counter() - t0, "cpu": cpu_of_children() - cpu0, "load": load}


def compare(name: str, captures: list[Path], job_counts: list[int], repeat: int,
            json_report: bool) -> dict:
    name += " --json" if json_report else ""
    runs: dict[int, list[dict]] = {j: [] for j in job_counts}
    ceiling: list[dict] = []
    first = None
    for _ in range(repeat):
        for jobs in job_counts:
            r = timed(captures, jobs, DATA / f"out-{jobs}.json" if json_report else None,
                      split=len(captures) == 1)
            if first is None:
                first = r["doc"]
            elif r["doc"] != first:
                sys.exit(f"{name}: --jobs {jobs} gave another JSON report than --jobs "
                         f"{job_counts[0]}")
            r.pop("doc")
            runs[jobs].append(r)
            print(f"  {name} --jobs {jobs}: {r['wall']:6.2f} s wall, {r['cpu']:6.2f} s CPU, "
                  f"CPU path {r['path']:5.2f} s, load {r['load']:.2f}", flush=True)
        if len(captures) >= job_counts[-1] and not json_report:
            r = independent(captures, job_counts[-1])
            ceiling.append(r)
            print(f"  {name} as {job_counts[-1]} independent --jobs 1 runs: {r['wall']:6.2f} s "
                  f"wall, {r['cpu']:6.2f} s CPU, load {r['load']:.2f}", flush=True)
    wall = {j: statistics.median(r["wall"] for r in rs) for j, rs in runs.items()}
    cpu = {j: statistics.median(r["cpu"] for r in rs) for j, rs in runs.items()}
    path = {j: statistics.median(r["path"] for r in rs) for j, rs in runs.items()}
    base = job_counts[0]
    for j in job_counts[1:]:
        print(f"{name}: --jobs {j} is {wall[base] / wall[j]:.2f}x --jobs {base} (median wall "
              f"{wall[base]:.2f} s -> {wall[j]:.2f} s; CPU {cpu[base]:.2f} s -> {cpu[j]:.2f} s; "
              f"CPU path {path[base]:.2f} s -> {path[j]:.2f} s, "
              f"{path[base] / path[j]:.2f}x)" + ("; JSON identical" if json_report else ""),
              flush=True)
    if ceiling:
        bound = statistics.median(r["wall"] for r in ceiling)
        print(f"{name}: {job_counts[-1]} independent one-core runs take {bound:.2f} s (median): "
              f"{wall[base] / bound:.2f}x --jobs {base}, the most splitting this batch can give "
              f"on this machine", flush=True)
    return {"wall": wall, "cpu": cpu, "path": path, "runs": runs, "independent": ceiling}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--connections", type=int, default=50_000, help="per file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--large", action="store_true", help="also one large capture")
    ap.add_argument("--large-connections", type=int, default=200_000)
    ap.add_argument("--no-batch", action="store_true", help="only the large capture")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    DATA.mkdir(parents=True, exist_ok=True)
    duration = 600.0 * args.connections / 100_000
    batch = [make(DATA / f"batch-{seed}.pcap", args.connections, seed, duration)
             for seed in range(1, args.files + 1)]
    packets = sum(p.stat().st_size for p in batch) / 2**20
    print(f"batch: {args.files} captures, {args.connections:,} connections each, "
          f"{packets:.0f} MiB; {os.cpu_count()} cores", flush=True)
    figures = {} if args.no_batch else {
        f"batch{' --json' * j}": compare("batch", batch, [1, args.jobs], args.repeat, j)
        for j in (False, True)}
    if args.large:
        total = args.large_connections
        large = make(DATA / f"large-{total}.pcap", total, 1, 600.0 * total / 100_000)
        print(f"large: 1 capture, {total:,} connections, "
              f"{large.stat().st_size / 2**20:.0f} MiB", flush=True)
        for j in (False, True):
            figures[f"large{' --json' * j}"] = compare("large", [large], [1, args.jobs],
                                                       args.repeat, j)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
