"""A new user's first run: fresh virtualenv, ``pip install .``, then the first ``analyze``.

    python3 tests/benchmarks/cold_start.py [--capture sample_pcaps/close-wait-leak.pcap]

Prints the install's time (and how much of it is compiling the core: a ``--no-deps``
reinstall), then wall time and peak memory (max RSS) of the first and second
``traceaudit analyze --json`` of one capture, of a run from a read-only install with a read-only
``$HOME`` (as root: read-only bind mounts in a private mount namespace), and of
``tshark -q -z conv,tcp`` on the same file. Everything is a fresh process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def timed(argv: list[str], **kw) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, peak RSS in MB of that process and the children it waited for, result)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, subprocess.CompletedProcess(argv, proc.returncode,
                                                                     stdout, stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", default=str(ROOT / "sample_pcaps" / "close-wait-leak.pcap"))
    args = ap.parse_args()
    capture = str(Path(args.capture).resolve())
    with tempfile.TemporaryDirectory(prefix="traceaudit-cold-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
               "--disable-pip-version-check"]
        t0 = time.perf_counter()
        subprocess.run(pip + [str(ROOT)], check=True)
        install = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run(pip + ["--no-deps", "--force-reinstall", str(ROOT)], check=True)
        compile_only = time.perf_counter() - t0
        exe = str(venv / "bin" / "traceaudit")
        out = str(Path(tmp) / "out.json")
        analyze = [exe, "analyze", capture, "--json", out]
        print(f"pip install . into a fresh venv: {install:.1f} s "
              f"(of which building the core, a --no-deps reinstall: {compile_only:.1f} s)")
        rows = []
        # the reinstall left no run behind it: the next run is the first after an install
        for label in ("first analyze after install", "second analyze"):
            wall, peak, run = timed(analyze, cwd=tmp)
            rows.append((label, wall, peak, run.returncode, "Traceback" in run.stderr))
        if os.geteuid() == 0 and shutil.which("unshare"):
            site = subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip()
            home = Path(tmp) / "home"
            home.mkdir()
            mounts = " && ".join(f'mount --bind "{d}" "{d}" && mount -o remount,bind,ro "{d}"'
                                 for d in (site, home))
            cmd = f"{mounts} && HOME={home} " + " ".join(f'"{a}"' for a in analyze)
            wall, peak, run = timed(["unshare", "--mount", "--propagation", "private", "sh",
                                     "-c", cmd], cwd=tmp)
            rows.append(("read-only install and $HOME", wall, peak, run.returncode,
                         "Traceback" in run.stderr))
        if shutil.which("tshark"):
            wall, peak, run = timed(["tshark", "-q", "-n", "-r", capture, "-z", "conv,tcp"])
            rows.append(("tshark -q -z conv,tcp", wall, peak, run.returncode, False))
    print(f"{'run':<32} {'wall s':>7} {'peak MB':>8} {'exit':>5}  traceback")
    for label, wall, peak, code, tb in rows:
        print(f"{label:<32} {wall:7.2f} {peak:8.0f} {code:5d}  {'YES' if tb else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
