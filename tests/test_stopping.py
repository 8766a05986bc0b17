"""traceaudit.stopping: a run stopped by a signal, at a safe point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from traceaudit import stopping

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_stop_left():
    stopping.reset()
    yield
    stopping.reset()


def test_a_stop_is_raised_where_it_is_checked_with_the_signals_exit_status():
    stopping.check()                                    # nothing asked: nothing raised
    assert stopping.ask(signal.SIGTERM) == 1            # outside a pipe read: only noted
    assert stopping.ask(signal.SIGINT) == 2             # the first signal counts
    with pytest.raises(stopping.Stopped) as stop:
        stopping.check()
    assert stop.value.code == 128 + signal.SIGTERM
    assert isinstance(stop.value, SystemExit)


def test_only_the_main_thread_waiting_on_a_pipe_is_interrupted_at_once():
    with stopping.interruptible():
        with pytest.raises(stopping.Stopped):
            stopping.ask(signal.SIGHUP)
    stopping.reset()
    seen = []

    def elsewhere():
        with stopping.interruptible():              # another thread: no effect
            seen.append(stopping.ask(signal.SIGTERM))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert seen == [1]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigterm_stops_a_run_waiting_on_a_silent_pipe(jobs):
    """``tcpdump ... -w - | traceaudit analyze -`` with nothing captured yet: the read of
    standard input blocks, and SIGTERM still ends the run at once (143, one line)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen([sys.executable, "-m", "traceaudit", "analyze", "-", "--jobs", jobs],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env)
    try:
        header = (ROOT / "sample_pcaps" / "close-wait-leak.pcap").read_bytes()[:24]
        run.stdin.write(header)                     # a pcap header, then nothing
        run.stdin.flush()
        import time
        deadline = time.monotonic() + 30
        while not _catches_sigterm(run.pid):        # its handler is installed
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)                             # (reading standard input by now)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=15) == 128 + signal.SIGTERM
        err = run.stderr.read().decode()
        assert err.strip() == "traceaudit: stopped by SIGTERM", err
    finally:
        run.kill()
        run.stdin.close()
        run.wait()


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines()
                      if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)
