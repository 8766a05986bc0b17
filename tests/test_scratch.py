"""traceaudit.scratch: a run's scratch directories, and those a killed run left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from traceaudit.scratch import LOCK_NAME, remove_abandoned, scratch_directory


def test_a_directory_goes_with_its_run_and_holds_its_lock_meanwhile(tmp_path):
    with scratch_directory("ta-test-", str(tmp_path)) as where:
        assert os.path.isfile(os.path.join(where, LOCK_NAME))
        (tmp_path / "x").write_text("")
        open(os.path.join(where, "part"), "w").close()
        assert remove_abandoned("ta-test-", str(tmp_path)) == []      # alive: kept
        assert os.path.isdir(where)
    assert not os.path.exists(where)


def test_only_directories_whose_run_died_are_removed(tmp_path):
    """A process that made a directory and died (os._exit: no clean-up) leaves it; one that
    is still alive keeps its own; a directory without a lock file is not touched; nor is a
    directory of another prefix."""
    script = textwrap.dedent(f"""
        import os, sys
        from traceaudit.scratch import scratch_directory
        with scratch_directory("ta-test-", {str(tmp_path)!r}) as where:
            print(where, flush=True)
            if sys.argv[1] == "die":
                os._exit(9)
            sys.stdin.read()
    """)
    alive = subprocess.Popen([sys.executable, "-c", script, "live"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        alive_dir = alive.stdout.readline().strip()
        dead = subprocess.run([sys.executable, "-c", script, "die"], capture_output=True,
                              text=True, timeout=60)
        dead_dir = dead.stdout.strip()
        assert dead.returncode == 9 and os.path.isdir(dead_dir)
        unlocked = tmp_path / "ta-test-nolock"
        unlocked.mkdir()
        other = tmp_path / "other-prefix"
        other.mkdir()
        (other / LOCK_NAME).write_text("")
        assert remove_abandoned("ta-test-", str(tmp_path)) == [dead_dir]
        assert not os.path.exists(dead_dir)
        assert os.path.isdir(alive_dir) and unlocked.is_dir() and other.is_dir()
    finally:
        alive.communicate("", timeout=60)
    assert not os.path.exists(alive_dir)
