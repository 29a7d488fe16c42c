"""Every status, on every backend, from real programs."""

from __future__ import annotations

import os

import pytest

from evalkit.sandbox import Limits

QUICK = Limits(timeout_s=3, cpu_s=1)


def test_a_complete_program_passes_with_its_output(sandbox):
    result = sandbox.run('import sys\nprint("to out")\nprint("to err", file=sys.stderr)\n')
    assert result.status == "passed", result.detail
    assert result.exit_code == 0
    assert result.stdout == "to out\n"
    assert result.stderr == "to err\n"
    assert result.wall_s > 0 and result.cpu_s > 0


def test_a_failing_assert_fails_with_the_traceback_of_the_program_only(sandbox):
    result = sandbox.run("def f():\n    return 1\n\nassert f() == 2, 'wrong answer'\n")
    assert result.status == "failed"
    assert result.exit_code == 1
    assert result.detail == "exit code 1: AssertionError: wrong answer"
    assert 'File "program.py", line 4' in result.stderr
    assert "runner" not in result.stderr  # no frame of ours in what the model's author sees


def test_a_syntax_error_fails(sandbox):
    result = sandbox.run("def broken(:\n    pass\n")
    assert result.status == "failed"
    assert "SyntaxError" in result.detail


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "raise SystemExit",
                                       "import os\nos._exit(0)"])
def test_exit_code_zero_before_the_end_is_a_failure(sandbox, exit_call):
    result = sandbox.run(f"{exit_call}\nassert False\n")
    assert result.status == "failed"
    assert result.exit_code == 0
    assert result.detail.startswith("early exit before the end of the program")


def test_an_explicit_nonzero_exit_fails_with_its_code(sandbox):
    result = sandbox.run("import sys\nsys.exit(3)\n")
    assert (result.status, result.exit_code) == ("failed", 3)


def test_a_program_killed_by_a_signal_fails_and_says_which(sandbox):
    result = sandbox.run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert result.status == "failed"
    assert result.exit_code == -11
    assert result.detail == "killed by SIGSEGV"


def test_an_exit_hook_that_fails_after_the_program_turns_a_pass_into_a_failure(sandbox):
    result = sandbox.run("import atexit, os\natexit.register(lambda: os._exit(4))\n")
    assert (result.status, result.exit_code) == ("failed", 4)


def test_cpu_time_limit_is_a_timeout(sandbox):
    result = sandbox.run("while True:\n    pass\n", QUICK)
    assert result.status == "timeout"
    # SIGXCPU (rlimit) and the cgroup's CPU check race; either verdict names the CPU limit.
    assert "CPU time limit" in result.detail
    assert result.cpu_s >= 0.9


def test_wall_time_limit_is_a_timeout(sandbox):
    result = sandbox.run("import time\nprint('started', flush=True)\ntime.sleep(60)\n",
                         Limits(timeout_s=1, cpu_s=1))
    assert result.status == "timeout"
    assert result.detail == "wall time limit of 1 s exceeded"
    assert result.stdout == "started\n"  # what it printed before is kept
    assert 1 <= result.wall_s < 5


def test_memory_limit_is_oom(sandbox):
    result = sandbox.run("x = bytearray(300 * 1024 * 1024)\n", Limits(memory_mb=200))
    assert result.status == "oom"
    assert "MemoryError" in result.detail


def test_output_cap_is_output_limit_and_keeps_the_first_bytes(sandbox):
    result = sandbox.run("print('x' * 5000)\n", Limits(output_bytes=1000))
    assert result.status == "output_limit"
    assert result.stdout == "x" * 1000


def test_output_just_under_the_cap_passes(sandbox):
    result = sandbox.run("print('x' * 998)\n", Limits(output_bytes=1000))
    assert result.status == "passed"
    assert len(result.stdout) == 999


def test_file_size_limit_fails_the_write(sandbox):
    result = sandbox.run("open('big', 'wb').write(b'x' * (2 * 1024 * 1024))\n",
                         Limits(file_size_mb=1))
    assert result.status == "failed"
    assert "File too large" in result.detail


def test_open_files_limit(sandbox):
    source = ("import os\nfds = []\ntry:\n    while True:\n        fds.append(os.open('/dev/null', "
              "os.O_RDONLY))\nexcept OSError as e:\n    print(len(fds), e.errno)\n")
    result = sandbox.run(source, Limits(open_files=16))
    assert result.status == "passed"
    opened, errno_ = map(int, result.stdout.split())
    assert opened < 16 and errno_ == 24  # EMFILE


def test_programs_run_isolated_python_with_a_scrubbed_environment(sandbox, monkeypatch):
    monkeypatch.setenv("EVALKIT_TEST_SECRET", "do-not-leak")
    source = ("import os, sys\nprint(sorted(os.environ))\nprint(sys.flags.isolated, "
              "sys.flags.no_site, __name__, os.getcwd(), os.getuid() != 0)\n")
    result = sandbox.run(source)
    assert result.status == "passed"
    env_line, flags_line = result.stdout.splitlines()
    assert "EVALKIT_TEST_SECRET" not in env_line and "do-not-leak" not in result.stdout
    assert set(eval(env_line)) <= {"PATH", "HOME", "LANG", "TMPDIR", "PWD", "HOSTNAME"}
    assert flags_line == "1 1 __main__ /tmp/work True"


def test_nothing_passes_from_one_program_to_the_next(sandbox):
    writer = ("import os\nopen('/tmp/left-behind', 'w').write('answer')\n"
              "open('mine', 'w').write('x')\nprint(os.getcwd())\n")
    reader = ("import os\nprint(sorted(os.listdir('/tmp')), sorted(os.listdir('.')), "
              "os.path.exists('/tmp/left-behind'))\n")
    results = sandbox.run_many([(writer, None)] * sandbox.workers)
    assert all(r.status == "passed" for r in results)
    for result in sandbox.run_many([(reader, None)] * sandbox.workers):
        assert result.stdout.strip() == "['work'] [] False"


def test_run_many_keeps_input_order_and_uses_every_worker(sandbox):
    source = "import time, os\ntime.sleep(0.2)\nprint({i}, os.getuid())\n"
    results = sandbox.run_many([(source.format(i=i), None) for i in range(8)])
    assert [int(r.stdout.split()[0]) for r in results] == list(range(8))
    # one uid per worker slot, never root, and every worker had a share of the work
    uids = {int(r.stdout.split()[1]) for r in results}
    assert uids == set(sandbox.uids)
    assert 0 not in uids


def test_a_random_module_is_seeded_for_each_program(sandbox):
    results = sandbox.run_many([("import random\nprint(random.random())\n", None)] * 4)
    assert len({r.stdout for r in results}) == 4


@pytest.mark.skipif(os.geteuid() != 0, reason="uid per worker slot is the root mode")
def test_each_worker_gets_its_own_non_root_uid(sandbox):
    assert len(set(sandbox.uids)) == sandbox.workers
    assert min(sandbox.uids) >= 60000
