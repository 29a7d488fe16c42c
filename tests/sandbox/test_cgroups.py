"""A cgroup per worker (a container per worker on the docker backend): each limit trips, an
innocent program beside the culprit passes, the CPU time is the whole program's, the cgroup is
emptied after each program and removed at the end, and without any cgroup evaluation refuses
to run unless told to.

The hostile programs are the suite's (sandbox/hostile/); each runs on one worker while an
innocent CPU-bound program runs on the other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.sandbox import Limits, get_sandbox
from evalkit.sandbox.selftest import hostile_programs

HOSTILE = {p.name: p for p in hostile_programs()}
# About a CPU-second of work: under a neighbour hog without a CPU quota (autogroup after
# setsid) it got 1.1 s of CPU in 5 s of wall and timed out.
INNOCENT = "total = 0\nfor i in range(12_000_000):\n    total += i & 7\nprint(total)\n"
INNOCENT_LIMITS = Limits(timeout_s=5, cpu_s=3)

needs_root = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")


@pytest.mark.slow
@pytest.mark.parametrize("culprit, status", [
    ("cpu_setsid_children", "timeout"),  # 7 children after setsid: CPU of the whole cgroup
    ("memory_memfd", "oom"),  # memfd pages, outside RLIMIT_AS
    ("memory_shm_files", "passed"),  # tmpfs size caps
    ("inode_flood", "passed"),  # tmpfs nr_inodes caps
    ("fork_bomb", "timeout"),  # pids
])
def test_each_limit_trips_and_the_neighbour_passes(sandbox, culprit, status):
    hostile = HOSTILE[culprit]
    bad, good = sandbox.run_many([(hostile.template, hostile.limits),
                                          (INNOCENT, INNOCENT_LIMITS)])
    assert bad.status == status, bad.detail + bad.stdout[-300:] + bad.stderr[-300:]
    assert "ESCAPED" not in bad.stdout
    if good.status == "timeout" and os.getloadavg()[0] > 3 * (os.cpu_count() or 1):
        # A CPU quota keeps the culprit to its core; it cannot give us a core others hold.
        pytest.skip(f"the machine itself is overloaded (load {os.getloadavg()[0]:.0f})")
    assert (good.status, good.stdout) == ("passed", "42000000\n"), good.detail


def test_cpu_time_is_the_whole_programs(process_sandbox):
    source = ("import os, time\n"
              "pids = [os.fork() for _ in range(2)]\n"
              "if 0 in pids:\n"
              "    end = time.process_time() + 0.3\n"
              "    while time.process_time() < end: pass\n"
              "    os._exit(0)\n"
              "for pid in pids: os.waitpid(pid, 0)\n")
    # The parent, a child of the first fork, and (from the second fork) one more child of
    # each: three of the four processes spin 0.3 s.
    result = process_sandbox.run(source, Limits(timeout_s=10, cpu_s=5))
    assert result.status == "passed", result.detail
    assert result.cpu_s >= 0.85


def test_the_pids_limit_counts_every_task(process_sandbox):
    source = ("import threading, time\nmade = 0\n"
              "try:\n"
              "    for _ in range(50):\n"
              "        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n"
              "        made += 1\n"
              "except RuntimeError:\n    pass\nprint(made)\n")
    result = process_sandbox.run(source, Limits(processes=5))
    assert result.status == "passed", result.detail
    assert result.stdout == "4\n"  # the program's own thread is the fifth task


def test_each_worker_has_its_own_cgroup_emptied_after_each_program(process_sandbox):
    process_sandbox.run("import os\nfor _ in range(3):\n    os.fork() or __import__('time')"
                        ".sleep(30)\n", Limits(timeout_s=1, cpu_s=1))
    for worker in process_sandbox._workers:
        assert worker.cgroup is not None and worker.cgroup.dirs
        bwrap, runner = worker._proc.pid, worker.runner_pid()
        for path in worker.cgroup.dirs:
            # bwrap, the runner, and the runner's next child, forked ahead for its program
            procs = {int(pid) for pid in (path / "cgroup.procs").read_text().split()}
            assert {bwrap, runner} <= procs and len(procs) <= 3
            assert all(pid in (bwrap, runner) or _parent(pid) == runner for pid in procs)


def test_closing_removes_the_cgroups():
    with get_sandbox("process", workers=1) as sandbox:
        dirs = list(sandbox._workers[0].cgroup.dirs)
        assert all(path.is_dir() for path in dirs)
    assert not any(Path(path).exists() for path in dirs)


def _without_cgroups(*args: str) -> subprocess.CompletedProcess:
    """evalkit in a mount namespace where /sys/fs/cgroup is an empty tmpfs: no cgroup at all."""
    inner = f"mount -t tmpfs none /sys/fs/cgroup && exec {sys.executable} -m evalkit " + \
        " ".join(args)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                          capture_output=True, text=True, timeout=120)


@needs_root
def test_without_a_cgroup_evaluation_refuses_unless_allowed(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text("print('ran')\n")
    refused = _without_cgroups("sandbox", "run", str(program), "--json")
    assert refused.returncode == 2, refused.stderr
    assert "cannot make a cgroup" in refused.stderr and "--allow-weaker-isolation" in refused.stderr
    allowed = _without_cgroups("sandbox", "run", str(program), "--json",
                               "--allow-weaker-isolation")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["stdout"] == "ran\n"
    assert "WEAKER ISOLATION" in allowed.stderr


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
