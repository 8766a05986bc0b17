"""Record traceaudit's answers on a set of captures, or compare two recordings.

Used to show that a change of the compiled core changes no answer:

    python3 tests/benchmarks/same_answers.py record OLD_DIR [--traceaudit OLD/bin/traceaudit]
    python3 tests/benchmarks/same_answers.py record NEW_DIR
    python3 tests/benchmarks/same_answers.py compare OLD_DIR NEW_DIR

``record`` runs ``analyze --json`` and ``flows --format csv`` on every sample capture, every
trace of ``../shared/corpus/zeek`` (where it is there) and ``bench-data/synthetic-3m.pcap``
(where it is there), plus ``analyze --html`` of the samples and of the synthetic capture and ``states`` of each
sample at two moments, with the captures named by the
same relative paths in every recording. ``compare`` scrubs what depends on the run (the JSON's
``generated_at``, the HTML's generation time and how long the analysis took) and reports every file that differs.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRUB = [
    (re.compile(rb'"generated_at": ?"[^"]*"'), b'"generated_at": "-"'),
    (re.compile(rb"generated \d{4}-\d\d-\d\d[ T][0-9:]+Z?( UTC)?"), b"generated -"),
    (re.compile(rb"analysed in [0-9.]+ s"), b"analysed in - s"),
    (re.compile(rb"analysis took [0-9.]+ s"), b"analysis took - s"),
]


def captures() -> list[tuple[str, str]]:
    """(name of the recording, capture path relative to the repository root)."""
    out = [(f"sample-{p.stem}", str(p.relative_to(ROOT)))
           for p in sorted((ROOT / "sample_pcaps").iterdir()) if p.suffix in (".pcap", ".pcapng")]
    corpus = ROOT.parent / "shared" / "corpus" / "zeek" / "traces"
    if corpus.is_dir():
        out += [(f"zeek-{p.name}", os.path.relpath(p, ROOT)) for p in sorted(corpus.iterdir())
                if p.is_file()]
    synthetic = ROOT / "bench-data" / "synthetic-3m.pcap"
    if synthetic.is_file():
        out.append(("synthetic-3m", str(synthetic.relative_to(ROOT))))
    return out


def record(out_dir: Path, exe: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name, path in captures():
        jobs.append((f"{name}.analyze.json",
                     [exe, "analyze", path, "--json", "{out}", "--fail-on", "error"]))
        jobs.append((f"{name}.flows.csv", [exe, "flows", path, "--format", "csv", "-o", "{out}"]))
    jobs.append(("samples.html",
                 [exe, "analyze", "sample_pcaps/", "--html", "{out}", "--fail-on", "error"]))
    jobs += [(f"{name}.states-{at}.txt", [exe, "states", path, "--all", "--at", at])
             for name, path in captures() if name.startswith("sample-") for at in ("0.3", "5")]
    if any(name == "synthetic-3m" for name, _ in captures()):
        jobs.append(("synthetic-3m.html", [exe, "analyze", "bench-data/synthetic-3m.pcap",
                                           "--html", "{out}", "--fail-on", "error"]))
    for fname, cmd in jobs:
        target = (out_dir / fname).resolve()
        cmd = shlex.split(cmd[0]) + [c.replace("{out}", str(target)) for c in cmd[1:]]
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True)
        (out_dir / f"{fname}.stdout").write_bytes(run.stdout)
        (out_dir / f"{fname}.rc").write_text(f"{run.returncode}\n")
        if b"Traceback" in run.stderr:
            print(f"{fname}: traceback\n{run.stderr.decode(errors='replace')}", file=sys.stderr)
    print(f"recorded {len(jobs)} runs in {out_dir}")


def _scrubbed(data: bytes) -> bytes:
    for pattern, repl in SCRUB:
        data = pattern.sub(repl, data)
    return data


def compare(a: Path, b: Path) -> int:
    names = sorted({p.name for p in a.iterdir()} | {p.name for p in b.iterdir()})
    bad = 0
    for name in names:
        pa, pb = a / name, b / name
        if not pa.exists() or not pb.exists():
            print(f"only in one recording: {name}")
            bad += 1
            continue
        da, db = _scrubbed(pa.read_bytes()), _scrubbed(pb.read_bytes())
        if da != db:
            bad += 1
            print(f"differs: {name}")
            diff = difflib.unified_diff(da.decode(errors="replace").splitlines()[:200000],
                                        db.decode(errors="replace").splitlines()[:200000],
                                        lineterm="", n=1)
            for i, line in enumerate(diff):
                if i > 12:
                    break
                print("   ", line[:200])
    print(f"{len(names) - bad} of {len(names)} files identical")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--traceaudit", default=shutil.which("traceaudit") or "traceaudit",
                   help="the command to run (a path, or e.g. 'python3 -m traceaudit')")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.cmd == "record":
        record(args.out, args.traceaudit)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
