"""``--scheduler`` (issue 18, part 5): a real Dask scheduler and two workers on 127.0.0.1 read
the captures and the client writes the reports: the JSON equals a local run's; a worker
killed while it holds a capture is replaced, the capture read again, and the result is
still complete (no connection lost or doubled)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import held_pid

distributed = pytest.importorskip(
    "distributed", reason="Dask distributed is not installed (the cluster extra: "
                          "pip install -e '.[cluster]')")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_pcaps"
HOLD_ENV = "TRACEAUDIT_TEST_HOLD"


def _spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    # a session of its own: the worker's nanny and its worker process go down together
    return subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(scheduler address, hold directory, scheduler log): a scheduler and two
    single-threaded workers."""
    where = tmp_path_factory.mktemp("dask")
    hold = where / "hold"
    env = {**os.environ, "PYTHONPATH": str(ROOT), HOLD_ENV: f"{hold}:60"}
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs: list[subprocess.Popen] = []
    try:
        file = where / "scheduler.json"
        procs.append(_spawn([*dask, "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(file)], env,
                            where / "scheduler.log"))
        for n in range(2):
            procs.append(_spawn([sys.executable, "-m", "distributed.cli.dask_worker",
                                 "--scheduler-file", str(file), "--host", "127.0.0.1",
                                 "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                 "--local-directory", str(where / f"w{n}")], env,
                                where / f"worker{n}.log"))
        deadline = time.monotonic() + 60
        while not file.exists():
            assert time.monotonic() < deadline, (where / "scheduler.log").read_text()
            time.sleep(0.2)
        time.sleep(0.2)                     # (written whole)
        address = json.loads(file.read_text())["address"]
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, hold, where / "scheduler.log"
    finally:
        _stop(procs)


def _analyze(tmp_path: Path, name: str, *args) -> tuple[int, dict, str]:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRACEAUDIT_SCHEDULER", None)
    r = subprocess.run([sys.executable, "-m", "traceaudit", "analyze", SAMPLES, "--json", out,
                        *args], env=env, capture_output=True, text=True, timeout=180)
    return r.returncode, _report(out), r.stderr


def _report(path: Path) -> dict:
    """A JSON report, parsed, and its bytes but for the time it was written."""
    text = path.read_bytes()
    doc = json.loads(text)
    stamp = doc.pop("generated_at")
    doc["(bytes, without the time)"] = text.replace(stamp.encode(), b"")
    return doc


def _connections(doc: dict) -> list[tuple]:
    return [(c["capture"], c["id"]) for c in doc["connections"]]


@pytest.mark.parametrize("spill", [[], ["--spill"]], ids=["whole", "flat"])
def test_cluster_json_equals_local(cluster, tmp_path, spill):
    """Each worker renders its captures' part of the JSON report (with ``--spill`` after a
    flat read, its memory following the connections open at once), and the client writes
    the report: the local run's, byte for byte once parsed."""
    address, _, _ = cluster
    code, local, _ = _analyze(tmp_path, "local", "--jobs", "1")
    remote_code, remote, err = _analyze(tmp_path, "remote", "--scheduler", address, *spill)
    assert (remote_code, err) == (code, "")
    assert remote == local
    listed = _connections(remote)
    assert len(listed) == len(set(listed)) == sum(c["connections"] or 0
                                                  for c in remote["captures"]) > 2000


def test_killed_worker_is_replaced(cluster, tmp_path):
    """SIGKILL to the worker process holding a capture: Dask reads it again elsewhere."""
    address, hold, log = cluster
    assert "Remove worker" not in log.read_text()
    code, local, _ = _analyze(tmp_path, "local", "--jobs", "1")
    hold.mkdir()
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = tmp_path / "remote.json"
        run = subprocess.Popen([sys.executable, "-m", "traceaudit", "analyze", SAMPLES,
                                "--json", out, "--scheduler", address], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.kill(held_pid(run, hold), signal.SIGKILL)
        _, err = run.communicate(timeout=120)
    finally:
        (hold / "held").unlink(missing_ok=True)
        hold.rmdir()
    assert run.returncode == code, err
    assert "Remove worker" in log.read_text()                  # the scheduler saw it die
    remote = _report(out)
    assert _connections(remote) == _connections(local)          # none lost, none doubled
    assert remote == local


def _run(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRACEAUDIT_SCHEDULER", None)
    return subprocess.run([sys.executable, "-m", "traceaudit", *map(str, args)], env=env,
                          capture_output=True, timeout=180)


@pytest.mark.parametrize("fmt", ["csv", "zeek"])
def test_cluster_flows_equal_local(cluster, tmp_path, fmt):
    """``flows``: a worker's flat read (CSV: its flow table spilled, sent as Arrow record
    batches and spilled again here) and Zeek's rows come back as a local run has them."""
    address, _, _ = cluster
    outputs = []
    for where in (["--jobs", "1"], ["--scheduler", address]):
        out = tmp_path / f"{where[0][2:]}.{fmt}"
        r = _run("flows", SAMPLES, "--format", fmt, "-o", out, *where)
        assert r.returncode == 0, r.stderr
        # (without Zeek's #open and #close lines: the time the log was written)
        outputs.append(b"".join(line for line in out.read_bytes().splitlines(True)
                                if not line.startswith((b"#open", b"#close"))))
    assert outputs[0] == outputs[1]
    assert outputs[0].count(b"\n") > 2000


def test_cluster_states_equal_local(cluster):
    address, _, _ = cluster
    capture = SAMPLES / "close-wait-leak.pcap"
    local, remote = (_run("states", capture, "--at", "2", *where)
                     for where in (["--jobs", "1"], ["--scheduler", address]))
    assert (remote.returncode, remote.stdout, remote.stderr) == \
        (local.returncode, local.stdout, local.stderr)
    assert b"CLOSE_WAIT" in local.stdout


def test_cluster_summary_alone_equals_local(cluster):
    """``analyze`` with the terminal summary alone: workers send each capture's findings as
    counts and the worst few (``CountedFindings``); the summary is the local run's."""
    address, _, _ = cluster
    local, remote = (_run("analyze", SAMPLES, *where)
                     for where in (["--jobs", "1"], ["--scheduler", address]))
    clock = re.compile(rb"analysed in [0-9.]+ s")
    assert (remote.returncode, clock.sub(b"", remote.stdout), remote.stderr) == \
        (local.returncode, clock.sub(b"", local.stdout), local.stderr)
    assert b"Worst findings (5 of" in local.stdout


def test_a_relative_path_the_workers_cannot_open_is_said_so(cluster, tmp_path):
    """Workers open paths from their own directory: a capture given by a path relative to
    another fails with a line that says so, and what to do."""
    address, _, _ = cluster
    (tmp_path / "x.pcap").write_bytes((SAMPLES / "close-wait-leak.pcap").read_bytes())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "traceaudit", "analyze", "x.pcap",
                        "--scheduler", address], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert "x.pcap: cannot open (No such file or directory) on a Dask worker" \
        in r.stderr
    assert f"start the workers in {tmp_path}" in r.stderr
    assert "Traceback" not in r.stderr
