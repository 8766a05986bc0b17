"""``--jobs N`` (issue 18, part 4): captures read in worker processes give every output of a
one-process run byte for byte (only the run's clock differs), the same stderr lines and exit
code when captures are damaged or missing, and rotated sets still read as one timeline."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import held_pid

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_pcaps"

#: what depends on the run's clock: generation time, elapsed time
CLOCK = [re.compile(p) for p in (
    r'"generated_at": ?"[^"]*"', r'timestamp="[^"]*"', r'<testsuites? ([^>]*?)time="[^"]*"',
    r'"endTimeUtc": "[^"]*"', r'"elapsedSeconds": [0-9.e-]+', r'generated [0-9T:Z-]+',
    r'took [0-9.]+ s', r'analysed in [0-9.]+ s', r'#(open|close)\t[0-9-]+')]


def masked(data: bytes) -> bytes:
    if data.startswith(b"PAR1"):                 # Parquet: no clock in it
        return data
    text = data.decode()
    for pattern in CLOCK:
        text = pattern.sub(lambda m: m.group(0)[:4] + "<clock>", text)
    return text.encode()


def traceaudit(*args, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "traceaudit", *map(str, args)], cwd=cwd,
                          env=env, input=stdin, capture_output=True, timeout=120)


def both(tmp_path: Path, *args, outputs=(), stdin: bytes | None = None) -> dict:
    """Run ``traceaudit ARGS`` with --jobs 1 and --jobs 2 (each in its own directory, so
    outputs named by relative paths do not collide) and assert every output equal."""
    seen = {}
    for jobs in (1, 2):
        where = tmp_path / f"jobs{jobs}"
        where.mkdir()
        r = traceaudit(*args, "--jobs", jobs, cwd=where, stdin=stdin)
        files = {name: masked((where / name).read_bytes()) for name in outputs}
        seen[jobs] = (r.returncode, masked(r.stdout), masked(r.stderr), files)
    one, two = seen[1], seen[2]
    assert one[0] == two[0], (one[2], two[2])
    assert one[2] == two[2]                       # stderr, line for line
    assert one[1] == two[1]                       # stdout (summary, tables)
    for name in outputs:
        assert one[3][name] == two[3][name], name
    return {"returncode": one[0], "stdout": one[1], "stderr": one[2], "files": one[3]}


def _handoff_dirs() -> set[Path]:
    """The workers' result directories there are (``alongside.handoff_directory``)."""
    import tempfile
    return {p for where in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(where)
            for p in Path(where).glob("traceaudit-results-*")}


def test_analyze_reports_identical(tmp_path):
    before = _handoff_dirs()
    r = both(tmp_path, "analyze", SAMPLES, "--json", "r.json", "--junit", "r.xml",
             "--sarif", "r.sarif", "--html", "r.html",
             outputs=("r.json", "r.xml", "r.sarif", "r.html"))
    assert r["returncode"] == 1
    captures = len([p for p in Path(SAMPLES).iterdir() if p.suffix in (".pcap", ".pcapng")])
    assert f"{captures} capture(s)".encode() in r["stdout"]
    assert r["files"]["r.json"].count(b'"rule":') > 20          # the findings are there
    # the workers' results crossed as files, all read and removed with their directory
    assert _handoff_dirs() == before


@pytest.mark.parametrize("fmt", ["csv", "zeek", "parquet"])
def test_flows_identical(tmp_path, fmt):
    r = both(tmp_path, "flows", SAMPLES, "--format", fmt, "-o", "flows.out",
             outputs=("flows.out",))
    assert r["returncode"] == 0 and len(r["files"]["flows.out"]) > 10_000


@pytest.mark.parametrize("args", [("flows",), ("states", "--at", "1", "--all")],
                         ids=["flows-table", "states"])
def test_terminal_tables_identical(tmp_path, args):
    r = both(tmp_path, args[0], SAMPLES, *args[1:])
    assert r["returncode"] == 0 and r["stdout"].count(b"\n") > 2000


def test_damaged_missing_and_not_captures(tmp_path):
    """Damage, a missing file and a file that is not a capture: the same stderr lines, in
    the same order, and exit code 2; the other captures are analysed all the same."""
    batch = tmp_path / "batch"
    batch.mkdir()
    for name in ("close-wait-leak.pcap", "half-close.pcap", "time-wait-pileup.pcap"):
        shutil.copy(SAMPLES / name, batch / name)
    whole = (SAMPLES / "lost-final-ack.pcap").read_bytes()
    (batch / "cut.pcap").write_bytes(whole[:len(whole) - 7])          # a record cut short
    (tmp_path / "garbage.pcap").write_bytes(b"this is not a capture\n" * 10)
    (tmp_path / "run").mkdir()
    r = both(tmp_path / "run", "analyze", batch, tmp_path / "garbage.pcap",
             tmp_path / "missing.pcap", "--json", "r.json", outputs=("r.json",))
    assert r["returncode"] == 2
    errors = [line for line in r["stderr"].splitlines() if b"error:" in line]
    assert len(errors) == 3 and b"cut.pcap at byte offset" in errors[0], r["stderr"]
    assert b"garbage.pcap" in errors[1] and b"missing.pcap" in errors[2]
    assert r["files"]["r.json"].count(b'"path":') >= 6


def test_rotated_sets_and_standard_input(tmp_path):
    """Rotated pieces are one unit (a timeline read by one worker), a set whose pieces
    overlap is read apart in the same order, and '-' is read by the parent."""
    if shutil.which("editcap") is None:
        pytest.skip("needs editcap (wireshark-common) to split a capture")
    ring = tmp_path / "ring"
    ring.mkdir()
    subprocess.run(["editcap", "-c", "5", SAMPLES / "close-wait-leak-rst.pcap",
                    ring / "piece.pcap"], check=True, capture_output=True)
    overlap = tmp_path / "overlap"
    overlap.mkdir()
    for name in ("out.pcap", "out.pcap1"):
        shutil.copy(SAMPLES / "half-close.pcap", overlap / name)
    (tmp_path / "run").mkdir()
    piped = (SAMPLES / "fin-wait-2-hang.pcap").read_bytes()
    r = both(tmp_path / "run", "analyze", ring, "-", overlap, SAMPLES / "half-open-handshake.pcap",
             "--json", "r.json", outputs=("r.json",), stdin=piped)
    doc = r["files"]["r.json"]
    assert doc.count(b'"merge_command"') == 2                     # ring and overlap's first
    assert b"/dev/stdin" in doc and b"out.pcap1 starts" in r["stderr"]
    assert b"TA101" in doc                                         # the ring's finding


def test_one_unit_needs_no_pool(monkeypatch):
    """A single capture (or stdin beside it), or a small batch without --jobs, is read in
    this process: no worker to start."""
    from traceaudit.parallel import runner
    from traceaudit.pipeline import ReadOptions

    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for one unit")

    monkeypatch.setattr(runner, "_pooled", no_pool)
    done = list(runner.read_units([SAMPLES / "half-close.pcap"], ReadOptions(), None, jobs=4))
    assert len(done) == 1 and len(done[0].analysis.table) == 1
    done = list(runner.read_units([SAMPLES / "half-close.pcap", Path("/dev/null")],
                                  ReadOptions(), None, jobs=4))
    assert len(done) == 2 and done[1].analysis.failed
    # without --jobs, small captures are read here too (workers cost more than they save)
    few = [SAMPLES / "half-close.pcap", SAMPLES / "close-wait-leak.pcap"]
    assert len(list(runner.read_units(few, ReadOptions(), None, jobs=None))) == 2
    monkeypatch.setattr(runner, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(runner, "default_jobs", lambda: 2)
    with pytest.raises(AssertionError, match="a pool was started"):
        list(runner.read_units(few, ReadOptions(), None, jobs=None))


def test_errors_and_spilled_tables_cross_processes():
    """What a worker sends back survives pickling: capture errors with their attributes,
    and a flow table spilled to a temporary file."""
    import errno

    from traceaudit.errors import (CaptureBug, CaptureError, CaptureNotFoundError,
                                   capture_failure)
    from traceaudit.pipeline import ReadOptions, analyze_capture
    from traceaudit.retire import RetireOptions
    full = capture_failure("d.pcap", OSError(errno.ENOSPC, "No space left on device"))
    assert full.slug == "no-space"
    for error in (CaptureError("a.pcap", "cut short", offset=40), CaptureNotFoundError("b"),
                  CaptureBug("c.pcap", ValueError("boom")), full):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error)
        assert back.__dict__ == error.__dict__
    assert pickle.loads(pickle.dumps(CaptureNotFoundError("b"))).errno == 2
    a = analyze_capture(SAMPLES / "time-wait-pileup.pcap", ReadOptions(retire=RetireOptions()))
    back = pickle.loads(pickle.dumps(a.table))
    assert len(back) == len(a.table) == 2000
    assert back.columns().arrow().equals(a.table.columns().arrow())


@pytest.mark.parametrize("args", [("analyze", "--json", "out"),
                                  ("analyze", "--junit", "out"),
                                  ("analyze", "--spill", "--html", "out"),
                                  ("flows", "--format", "csv", "-o", "out")],
                         ids=["analyze", "analyze-rules-in-shares", "analyze-html-flat",
                              "flows-csv"])
def test_one_capture_split_by_flow_hash(tmp_path, monkeypatch, args):
    """One large capture with --jobs 2 is read as two shares by flow hash (``shares``) and
    merged: every output as one read's (a low threshold makes the sample "large")."""
    monkeypatch.setenv("TRACEAUDIT_SPLIT_MIN_BYTES", "1000")
    sample = SAMPLES / "time-wait-pileup.pcap"
    r = both(tmp_path, args[0], sample, *args[1:], outputs=("out",))
    assert r["files"]["out"].count(b"\n") >= 2000 or r["files"]["out"].count(b'"id":') >= 2000 \
        or b"2,000" in r["files"]["out"] and b"<svg class=\"ladder\"" in r["files"]["out"] \
        or b"time-wait-pileup" in r["files"]["out"] and b"<testcase" in r["files"]["out"]


def test_html_of_flat_reads_equals_the_workers(tmp_path):
    """``--spill --html``: every capture is read flat, its evidence bounded
    (``report/html_evidence.py``), in a worker too: its flat read crosses as it is, its spill
    and excerpt files handed over (``retire/spill_files.py``), so this process holds no
    capture whole. The worker is made to start first (``TRACEAUDIT_TEST_HOLD`` with 0 s) so
    that it reads the largest capture. The same page as --jobs 1; no file left behind."""
    hold = tmp_path / "hold"
    hold.mkdir()
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", HOLD_ENV: f"{hold}:0",
           "TMPDIR": str(temp)}
    alone = traceaudit("analyze", SAMPLES, "--spill", "--jobs", "1", "--html", "one.html",
                       cwd=tmp_path)
    run = subprocess.run([sys.executable, "-m", "traceaudit", "analyze", SAMPLES, "--spill",
                          "--jobs", "2", "--html", "two.html"], cwd=tmp_path, env=env,
                         capture_output=True, timeout=180)
    assert (hold / "held").read_text().isdigit()            # a worker read a capture
    assert run.returncode == alone.returncode == 1, run.stderr
    pages = [masked((tmp_path / f"{n}.html").read_bytes()) for n in ("one", "two")]
    assert pages[0] == pages[1]
    assert pages[0].count(b'<svg class="ladder"') > 30
    assert list(temp.iterdir()) == []


def test_a_flat_read_crosses_as_its_files(tmp_path, monkeypatch):
    """A worker's flat read pickles as second names of its spill and excerpt files in the
    hand-over directory, not their bytes; the receiving side opens and removes them, and
    reads the same connections and excerpts."""
    import pickle

    from traceaudit.parallel.steps import Audit
    from traceaudit.parallel.units import read_unit
    from traceaudit.pipeline import ReadOptions
    from traceaudit.retire import RetireOptions, flat, spill_files
    from traceaudit.retire.excerpt_spill import SpilledExcerpts
    from traceaudit.rules.config import make_config
    sample = SAMPLES / "time-wait-pileup.pcap"
    options = ReadOptions(retire=RetireOptions(facts=True))
    step = Audit(make_config(None), keep_excerpts=True).with_several_readers()
    monkeypatch.setattr(flat, "IN_MEMORY_BYTES", 0)     # (kept on disk, as a large one)
    spill_files.hand_over_in(str(tmp_path))
    try:
        (done,) = read_unit(sample, options, step)
        data = pickle.dumps(done, pickle.HIGHEST_PROTOCOL)
    finally:
        spill_files.hand_over_in(None)
    a = done.analysis
    assert flat.is_flat(a) and isinstance(a.excerpts, SpilledExcerpts)
    assert len(data) < a.table.size / 4                      # names, not the files' bytes
    handed = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("handed-"))
    assert len(handed) == 2
    back = pickle.loads(data).analysis
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("handed-")]
    assert back.table.columns().frame().equals(a.table.columns().frame())
    first = a.table.columns()["first_frame"].tolist()
    mine, theirs = a.excerpts.load(first), back.excerpts.load(first)
    assert mine.pool.tobytes() == theirs.pool.tobytes()
    assert all(mine.slots[k].tobytes() == theirs.slots[k].tobytes() for k in mine.slots)
    a.table.close()
    a.excerpts.close()
    assert not list(tmp_path.iterdir())                      # the worker's names went too


def test_split_only_for_one_large_file(monkeypatch):
    """The split is taken for one file over the threshold with more than one job, and only
    then (a batch is read a capture per worker): this process reads share 0, a worker the
    other (here the pool runs it in this process too)."""
    from traceaudit.parallel import runner, shares
    from traceaudit.pipeline import ReadOptions
    calls = []
    real = shares.share_task

    def counted(path, options, share, of, *args, **kw):
        calls.append((Path(path).name, share, of))
        return real(path, options, share, of, *args, **kw)

    monkeypatch.setattr(shares, "share_task", counted)
    monkeypatch.setattr(runner, "_pool", lambda workers, handoff: _InlinePool())
    sample = SAMPLES / "time-wait-pileup.pcap"
    monkeypatch.setenv("TRACEAUDIT_SPLIT_MIN_BYTES", str(sample.stat().st_size + 1))
    assert len(list(runner.read_units([sample], ReadOptions(), None, jobs=2))) == 1
    assert calls == []                                              # under the threshold
    monkeypatch.setenv("TRACEAUDIT_SPLIT_MIN_BYTES", str(sample.stat().st_size))
    (done,) = runner.read_units([sample], ReadOptions(), None, jobs=1)
    assert calls == []                                              # one job: one read
    (split,) = runner.read_units([sample], ReadOptions(), None, jobs=2)
    assert sorted(calls) == [("time-wait-pileup.pcap", 0, 2), ("time-wait-pileup.pcap", 1, 2)]
    assert len(split.analysis.table) == len(done.analysis.table) == 2000


class _InlinePool:
    """A pool that runs each task at once, in this process."""

    def submit(self, fn, *args):
        from concurrent.futures import Future
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, **kw) -> None:
        pass


def test_workers_read_with_flat_memory_where_the_step_lets_them():
    """A flat read's spill is a temporary file of the reading process: a worker reads so
    when ``analyze``'s step makes it portable (the summary's columns, the JSON part already
    rendered; for --html the flat read itself); on Dask it keeps its capture whole.
    ``flows``' flow-table spill crosses as it is (pickled)."""
    from traceaudit.parallel.runner import remote_options
    from traceaudit.parallel.steps import Audit
    from traceaudit.pipeline import ReadOptions
    from traceaudit.retire import RetireOptions
    from traceaudit.rules.config import make_config
    flat = ReadOptions(retire=RetireOptions(facts=True))
    config = make_config(None)
    summary = Audit(config, keep_excerpts=False, keep_events=False).with_several_readers()
    json = Audit(config, keep_excerpts=False, keep_events=True,
                 json_dir="/tmp").with_several_readers()
    html = Audit(config, keep_excerpts=True, keep_events=True).with_several_readers()
    assert remote_options(flat, summary).retire == flat.retire
    assert remote_options(flat, json).retire == flat.retire
    assert remote_options(flat, html).retire == flat.retire     # (its files handed over)
    assert remote_options(flat).retire is None              # (Dask: no step given)
    flows_spill = RetireOptions()
    assert remote_options(ReadOptions(retire=flows_spill)).retire == flows_spill


@pytest.mark.parametrize("reports", [[], ["--json", "r.json", "--junit", "r.xml",
                                          "--sarif", "r.sarif"]])
def test_a_flat_read_in_a_worker_reports_what_one_process_does(tmp_path, reports):
    """``--spill`` (every capture read with flat memory) with --jobs 2, the worker made to
    start before this process reads (``TRACEAUDIT_TEST_HOLD`` with 0 s) so that it reads the
    largest capture: summary, JSON, JUnit and SARIF equal one process keeping everything."""
    alone = tmp_path / "alone"
    alone.mkdir()
    one = traceaudit("analyze", SAMPLES, "--no-spill", "--jobs", "1", *reports, cwd=alone)
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", HOLD_ENV: f"{hold}:0"}
    run = subprocess.run([sys.executable, "-m", "traceaudit", "analyze", SAMPLES, "--spill",
                          "--jobs", "2", *reports], cwd=tmp_path, env=env,
                         capture_output=True, timeout=120)
    assert (hold / "held").read_text().isdigit()            # a worker read a capture
    assert run.returncode == one.returncode == 1, run.stderr
    assert masked(run.stdout) == masked(one.stdout)
    assert masked(run.stderr) == masked(one.stderr)
    for name in reports[1::2]:
        assert masked((tmp_path / name).read_bytes()) == masked((alone / name).read_bytes())


def test_jobs_one_is_one_core(monkeypatch):
    """``--jobs 1``: this process alone, without its read-ahead thread (which decodes on a
    second core); without --jobs a small batch read here keeps it."""
    from traceaudit.parallel import runner
    from traceaudit.pipeline import ReadOptions
    seen = []
    real = runner.in_process

    def recorded(units, options, step, progress=None):
        seen.append(options.read_ahead)
        return real(units, options, step, progress)

    monkeypatch.setattr(runner, "in_process", recorded)
    few = [SAMPLES / "half-close.pcap", SAMPLES / "close-wait-leak.pcap"]
    assert len(list(runner.read_units(few, ReadOptions(), None, jobs=1))) == 2
    assert len(list(runner.read_units(few, ReadOptions(), None, jobs=None))) == 2
    assert seen == [False, True]


HOLD_ENV = "TRACEAUDIT_TEST_HOLD"


def _held_run(tmp_path: Path, captures: list[Path], seconds: int):
    """``analyze CAPTURES --jobs 2`` with the worker holding the first unit it claims for
    ``seconds``; returns the process (running) and the held worker's pid."""
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), HOLD_ENV: f"{hold}:{seconds}"}
    run = subprocess.Popen([sys.executable, "-m", "traceaudit", "analyze", *captures,
                            "--json", tmp_path / "r.json", "--jobs", "2"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return run, held_pid(run, hold)


def test_results_keep_input_order_when_the_first_comes_back_last(tmp_path):
    """With --jobs 2 the worker is held 3 s on the first capture it claims (the largest)
    while this process reads the others (that it does is shown by the next test): the
    report is still --jobs 1's, in input order."""
    alone = traceaudit("analyze", SAMPLES, "--json", "one.json", "--jobs", "1", cwd=tmp_path)
    run, _ = _held_run(tmp_path, [SAMPLES], seconds=3)
    out, err = run.communicate(timeout=120)
    assert run.returncode == alone.returncode, err
    assert masked((tmp_path / "r.json").read_bytes()) == masked(
        (tmp_path / "one.json").read_bytes())


def test_a_dead_worker_loses_only_its_capture(tmp_path):
    """SIGKILL to the worker while it holds the first capture it claimed (the largest:
    ``claim_order``): that capture fails with an error line naming it; every other one
    (read here) is reported in full."""
    before = _handoff_dirs()
    run, pid = _held_run(tmp_path, [SAMPLES], seconds=60)
    os.kill(pid, signal.SIGKILL)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 2, err
    import json
    captures = json.loads((tmp_path / "r.json").read_text())["captures"]
    largest = max(SAMPLES.glob("*.pcap*"), key=lambda p: p.stat().st_size).name
    lost = [line for line in err.splitlines() if "ended abruptly" in line]
    assert len(lost) == 1 and largest in lost[0], err
    failed = [c for c in captures if c["error"]]
    assert [Path(c["path"]).name for c in failed] == [largest]
    assert len(captures) == len(list(SAMPLES.glob("*.pcap*")))
    assert all(c["connections"] >= 1 for c in captures if not c["error"])
    assert _handoff_dirs() == before


def test_results_go_through_the_pipe_when_the_handoff_disk_is_full(tmp_path, monkeypatch):
    """A full hand-off disk (ENOSPC) leaves no file and hands the result over as it is; a
    small ``/dev/shm`` (a container's 64 MB) is not used at all."""
    import errno
    import os as os_module

    from traceaudit.parallel import alongside
    result = [{"unit": 1}]
    path = alongside.left_in(str(tmp_path), "unit-1", result)
    assert path == str(tmp_path / "unit-1.pickle")
    assert alongside.handed_over(path) == result and not os.path.exists(path)

    def full(obj, out, protocol):
        out.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(alongside.pickle, "dump", full)
    left = alongside.left_in(str(tmp_path), "unit-2", result)
    assert left is result and list(tmp_path.iterdir()) == []
    assert alongside.handed_over(left) is result

    class Small:
        f_bavail, f_frsize = 16_000, 4096          # ~64 MB free

    monkeypatch.setattr(os_module, "statvfs", lambda where: Small())
    with alongside.handoff_directory() as where:
        assert not where.startswith("/dev/shm/") and os.path.isdir(where)
    assert not os.path.exists(where)


def test_largest_units_are_claimed_first(tmp_path):
    """The shared queue holds the units another process can read, largest first (input order
    among equals): workers take the large ones from the front, this process the small ones
    from the back, and what is left at the end is small."""
    from traceaudit.capture import CaptureSet
    from traceaudit.parallel.alongside import claim_order
    sizes = {"a": 10, "b": 300, "c": 10, "d": 50}
    units = []
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
        units.append(tmp_path / name)
    (tmp_path / "e1").write_bytes(b"x" * 200)
    (tmp_path / "e2").write_bytes(b"x" * 200)
    units.append(CaptureSet((tmp_path / "e1", tmp_path / "e2"), "test"))   # 400 in all
    units.append(Path("/dev/stdin"))
    remote = [True] * 5 + [False]
    assert claim_order(units, remote) == [4, 1, 3, 0, 2]


def test_workers_that_cannot_start_leave_every_unit_to_this_process(monkeypatch):
    """The tasks are submitted (which starts the worker processes) beside this process's
    first read; when that fails (no process can be forked), the units nobody claimed are
    read here, each once, and the results still come in input order."""
    from concurrent.futures import ProcessPoolExecutor

    from traceaudit.parallel import alongside

    def cannot_fork(self, fn, *args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(ProcessPoolExecutor, "submit", cannot_fork)
    units = [Path(f"/nonexistent/unit-{i}") for i in range(4)]
    read = []

    def read_here(unit, options):
        read.append(unit)
        return [unit.name]

    def lost(unit, exc):
        raise AssertionError(f"{unit} lost: {exc}")

    got = list(alongside.read_alongside(units, [True] * 4, 1, None, None, None, read_here,
                                        lost))
    assert got == [[u.name] for u in units]
    assert sorted(read) == sorted(units)


def _json_dirs() -> set[Path]:
    """The JSON report's scratch directories there are (``cli.analyze`` with --json), and the
    workers' flat-read hand-over directories (``retire.spill_files``)."""
    import tempfile
    where = Path(tempfile.gettempdir())
    return {*where.glob("traceaudit-json-*"), *where.glob("traceaudit-spills-*")}


def _gone(pid: int, within: float = 15) -> bool:
    import time
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopping_signal_ends_the_run_and_its_workers_cleanly(tmp_path, signum):
    """SIGTERM (``timeout``, a cancelled CI job) or SIGINT while a worker holds a capture:
    the run says so on one line and exits 128 + the signal (143, 130: not 1, which means
    findings); the worker ends at once (not after its capture), the scratch directories go,
    and no report, whole or partial, is left."""
    results, parts = _handoff_dirs(), _json_dirs()
    run, pid = _held_run(tmp_path, [SAMPLES], seconds=60)
    run.send_signal(signum)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1] == f"traceaudit: stopped by {name}", err
    assert "Traceback" not in err and "leaked" not in err
    assert _gone(pid, within=5)
    assert _handoff_dirs() == results and _json_dirs() == parts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hold"]      # no r.json, no .tmp


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers fork on Linux only")
def test_workers_are_forked_from_the_command_line_process(tmp_path):
    """The command line runs one thread when its workers start, so they are forked from it
    (``runner.worker_context``: they start with everything imported, not after a fork
    server's start-up): the held worker's parent is the run itself."""
    run, pid = _held_run(tmp_path, [SAMPLES], seconds=60)
    try:
        assert _parent_of(pid) == run.pid
    finally:
        run.kill()
        run.communicate(timeout=30)
    assert _gone(pid)


def test_workers_start_from_a_fork_server_while_another_thread_runs():
    """A fork would copy the locks another thread holds: with one running (a read-ahead
    decoder, a program's own), workers come from a fork server, and they read."""
    import threading

    from traceaudit.parallel.runner import read_units, worker_context
    from traceaudit.pipeline import ReadOptions
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert worker_context().get_start_method() == "forkserver"
        captures = sorted(SAMPLES.glob("*.pcap"))[:3]
        done = list(read_units(captures, ReadOptions(), None, jobs=2))
    finally:
        stop.set()
        other.join()
    assert [Path(d.analysis.stats.path).name for d in done] == [c.name for c in captures]
    assert all(d.analysis.stats.error is None and len(d.analysis.table) for d in done)


def test_ctrl_c_to_the_process_group_stops_the_run_in_one_line(tmp_path):
    """Ctrl-C at a terminal signals the whole process group, forked workers included: the
    run says it stopped once (a worker does not take the signal as the run's own: it
    ends), exits 130, and leaves nothing behind."""
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), HOLD_ENV: f"{hold}:60"}
    run = subprocess.Popen([sys.executable, "-m", "traceaudit", "analyze", SAMPLES,
                            "--json", tmp_path / "r.json", "--jobs", "2"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    pid = held_pid(run, hold)
    os.killpg(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert err.count("stopped by SIGINT") == 1 and "Traceback" not in err, err
    assert _gone(pid, within=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hold"]


def test_a_killed_run_leaves_no_worker_and_its_directories_are_cleared_next_time(tmp_path):
    """SIGKILL (the out-of-memory killer) cannot be handled: the held worker notices its
    main process is gone and ends, and the next run with workers removes the scratch
    directories the killed one left (their lock is free: ``traceaudit.scratch``)."""
    results, parts = _handoff_dirs(), _json_dirs()
    run, pid = _held_run(tmp_path, [SAMPLES], seconds=60)
    run.kill()
    run.communicate(timeout=30)
    assert _gone(pid)
    assert len(_handoff_dirs() - results) == 1 and len(_json_dirs() - parts) == 2
    again = traceaudit("analyze", SAMPLES, "--json", "again.json", "--jobs", "2",
                       cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    assert _handoff_dirs() <= results and _json_dirs() <= parts


@pytest.mark.parametrize("capture", ["time-wait-pileup.pcap", "close-wait-leak-rst.pcap"])
def test_a_portable_flat_read_renders_the_json_of_a_keeping_read(capture, monkeypatch):
    """A worker's flat read whose JSON part could not be rendered (the disk was full) comes
    back whole (``audit.portable(whole=True)``): its connection entries are those of a read
    that kept everything; without a JSON report only the summary's columns come back."""
    from traceaudit.audit import SUMMARY_COLUMNS
    from traceaudit.parallel.steps import Audit
    from traceaudit.pipeline import ReadOptions, analyze_capture
    from traceaudit.report import json_pieces
    from traceaudit.report.json_report import connection_text
    from traceaudit.retire import RetireOptions, flat
    from traceaudit.rules.config import make_config
    path = SAMPLES / capture
    config = make_config(None)
    kept = Audit(config, keep_excerpts=False, keep_events=True)(analyze_capture(path))[0]
    spill = ReadOptions(retire=RetireOptions(facts=True))
    monkeypatch.setattr(json_pieces, "rendered", lambda *args: None)       # a full disk
    step = Audit(config, keep_excerpts=False, keep_events=True,
                 json_dir="/nonexistent").with_several_readers()
    read = analyze_capture(path, spill)
    assert flat.is_flat(read)
    whole = step(read)[0]
    assert not flat.is_flat(whole) and whole.json_text is None
    assert b"".join(connection_text(whole)) == b"".join(connection_text(kept))
    summary = Audit(config, keep_excerpts=False, keep_events=False).with_several_readers()
    slim = summary(analyze_capture(path, spill))[0]
    assert list(slim.table.data) == list(SUMMARY_COLUMNS)
    assert len(slim.table) == len(kept.table)
    pickle.loads(pickle.dumps(slim))                        # it crosses to another process


STOPPED_EARLY = """
import multiprocessing, os, sys, time
from pathlib import Path
from traceaudit.parallel import alongside
from traceaudit.parallel.steps import Audit
from traceaudit.pipeline import ReadOptions
from traceaudit.rules.config import make_config

def sleep_long():
    time.sleep(60)

if __name__ == "__main__":
    hold = Path(sys.argv[1])
    theirs = multiprocessing.get_context("forkserver").Process(target=sleep_long)
    theirs.start()
    units = sorted(Path(sys.argv[2]).glob("*.pcap"))

    def read_here(unit, options):
        while not ((hold / "held").exists() and (hold / "held").read_text()):
            time.sleep(0.05)                   # the worker holds the largest capture
        raise RuntimeError("this process's read failed")

    step = Audit(make_config(None), keep_excerpts=False, keep_events=False)
    try:
        list(alongside.read_alongside(units, [True] * len(units), 1, ReadOptions(),
                                      ReadOptions(), step.with_several_readers(), read_here,
                                      lambda unit, exc: []))
    except RuntimeError:
        pass
    print(int((hold / "held").read_text()), theirs.is_alive(), flush=True)
    theirs.terminate()
    theirs.join()
"""


def test_a_run_stopped_early_ends_its_own_workers_only(tmp_path):
    """An exception in this process's read stops the pool at once: its worker, holding a
    capture, is terminated, not waited for; a process of the calling program's own (the
    Python API runs inside other programs) is left alone."""
    hold = tmp_path / "hold"
    hold.mkdir()
    script = tmp_path / "stopped_early.py"
    script.write_text(STOPPED_EARLY)
    env = {**os.environ, "PYTHONPATH": str(ROOT), HOLD_ENV: f"{hold}:60"}
    started = __import__("time").monotonic()
    run = subprocess.run([sys.executable, str(script), str(hold), str(SAMPLES)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    worker, theirs_alive = run.stdout.split()
    assert theirs_alive == "True"
    assert _gone(int(worker), within=5)
    assert __import__("time").monotonic() - started < 45       # the held 60 s not waited


def test_the_portable_summary_holds_no_view_of_the_spilled_records():
    """``audit.portable`` copies the summary's columns out of each chunk: a view would keep
    that chunk's whole records alive (at 30M packets the first version peaked at 955 MB
    instead of 294)."""
    from traceaudit.audit import SUMMARY_COLUMNS, portable
    from traceaudit.flows.columns import Coded
    from traceaudit.pipeline import ReadOptions, analyze_capture
    from traceaudit.retire import RetireOptions
    read = analyze_capture(SAMPLES / "time-wait-pileup.pcap",
                           ReadOptions(retire=RetireOptions(facts=True)))
    table = portable(read, whole=False).table
    for name in SUMMARY_COLUMNS:
        column = table.column(name)
        array = column.codes if isinstance(column, Coded) else column
        if hasattr(array, "base"):
            assert array.base is None or array.base.nbytes <= array.nbytes, name


def test_a_spill_crosses_as_its_bytes_where_it_cannot_be_linked(tmp_path, monkeypatch):
    """(a temporary directory on a file system without hard links)"""
    import pickle

    from traceaudit.retire import spill_files
    from traceaudit.retire.excerpt_spill import SpilledExcerpts

    def no_link(*args):
        raise PermissionError("no hard links here")

    spill_files.hand_over_in(str(tmp_path))
    try:
        spilled = SpilledExcerpts()
        spilled._file.write(b"x" * 1000)
        spilled._end = 1000
        monkeypatch.setattr(spill_files.os, "link", no_link)
        data = pickle.dumps(spilled)
    finally:
        spill_files.hand_over_in(None)
    back = pickle.loads(data)
    back._file.seek(0)
    assert back._file.read() == b"x" * 1000
    spilled.close()
    assert not list(tmp_path.iterdir())
