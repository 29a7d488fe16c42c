"""The process backend's own guarantees: clear errors, retries, nothing left when closed."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.sandbox import Limits, get_sandbox


def _runner_pids(sandbox) -> set[int]:
    """The bwrap process of each worker (only ours: other sandboxes may run on this machine)."""
    procs = [w._proc for w in sandbox._workers]  # read once: a worker may swap it meanwhile
    return {proc.pid for proc in procs if proc is not None}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_missing_bubblewrap_is_a_clear_error_not_a_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no bwrap to be found
    with pytest.raises(EvalkitError, match=r"apt-get install bubblewrap"):
        get_sandbox("process", workers=1)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(EvalkitError, match="unknown sandbox backend 'nsjail'"):
        get_sandbox("nsjail")


def test_selftest_passes_on_a_working_sandbox(process_sandbox):
    process_sandbox.selftest()  # raises EvalkitError otherwise


def test_the_sandbox_sees_a_minimal_read_only_world(process_sandbox):
    source = ("import os, socket\nprint(sorted(os.listdir('/')), socket.gethostname(), "
              "os.access('/usr', os.W_OK), os.path.exists('/etc'), os.path.exists('/work'))\n")
    result = process_sandbox.run(source)
    assert result.stdout.strip() == (
        "['bin', 'dev', 'lib', 'lib64', 'opt', 'proc', 'root', 'sbin', 'tmp', 'usr'] "
        "sandbox False False False")


def test_closing_kills_every_runner():
    sandbox = get_sandbox("process", workers=2)
    sandbox.run("print(1)")
    runners = _runner_pids(sandbox)
    assert len(runners) == 2
    sandbox.close()
    assert not any(_alive(pid) for pid in runners)
    with pytest.raises(EvalkitError, match="closed"):
        sandbox.run("print(1)")


def _kill_runner(bwrap_pid: int) -> None:
    """Kill the runner inside (the namespace's init) and its bwrap: a sandbox breaking down."""
    children = Path(f"/proc/{bwrap_pid}/task/{bwrap_pid}/children")
    with contextlib.suppress(OSError):
        for pid in [*map(int, children.read_text().split()), bwrap_pid]:
            os.kill(pid, signal.SIGKILL)


def _kill_runners_for(sandbox, seconds: float) -> None:
    """Keep killing the sandbox's runners: a broken sandbox, from the program's point of view."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pid in _runner_pids(sandbox):
            _kill_runner(pid)
        time.sleep(0.02)


@pytest.mark.slow
def test_a_runner_dying_under_a_program_is_retried_and_never_scored():
    with get_sandbox("process", workers=1) as sandbox:
        # Runners keep dying while the program runs: after one retry the sandbox says so.
        killer = threading.Thread(target=_kill_runners_for, args=(sandbox, 4.0))
        killer.start()
        time.sleep(0.2)
        result = sandbox.run("import time\ntime.sleep(1)\nprint('done')\n",
                             Limits(timeout_s=5))
        killer.join()
        assert result.status == "sandbox_error"
        assert result.exit_code is None
        # The sandbox heals: the next program gets a fresh runner and its real result.
        assert sandbox.run("print('after')\n").stdout == "after\n"


@pytest.mark.slow
def test_a_runner_dying_once_is_retried_on_a_fresh_one():
    with get_sandbox("process", workers=1) as sandbox:
        first = _runner_pids(sandbox)
        results = []
        thread = threading.Thread(target=lambda: results.append(
            sandbox.run("import time\ntime.sleep(1)\nprint('done')\n", Limits(timeout_s=5))))
        thread.start()
        time.sleep(0.3)
        for pid in first:
            _kill_runner(pid)
        thread.join()
        assert (results[0].status, results[0].stdout) == ("passed", "done\n")
        assert _runner_pids(sandbox).isdisjoint(first)


def test_a_tree_deeper_than_path_max_does_not_reach_the_next_program():
    from evalkit.sandbox.selftest import hostile_programs

    deep = next(p for p in hostile_programs() if p.name == "deep_tree")
    with get_sandbox("process", workers=1) as sandbox:
        worker = sandbox._workers[0]
        left = sandbox.run(deep.template, deep.limits)
        assert left.status == "passed" and "8040 characters deep" in left.stdout, left.detail
        runner = worker.runner_pid()
        after = sandbox.run("import os\nprint(os.listdir('/tmp'), os.listdir('/dev/shm'))\n")
        assert (after.status, after.stdout) == ("passed", "['work'] []\n"), after.detail
        assert worker.runner_pid() == runner  # no sandbox error, no retry on a fresh worker
