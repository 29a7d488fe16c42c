"""`evalkit sandbox run` and `evalkit sandbox selftest`, as people and CI scripts call them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def evalkit(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_run_json_prints_exactly_one_json_object(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text("import sys\nprint('hello')\nprint('warn', file=sys.stderr)\n")
    done = evalkit("sandbox", "run", str(program), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # the whole of stdout is the object
    assert result == {**result, "backend": "process", "status": "passed", "exit_code": 0,
                      "stdout": "hello\n", "stderr": "warn\n", "detail": "ran to the end"}
    assert set(result) == {"backend", "status", "exit_code", "stdout", "stderr", "wall_s",
                           "cpu_s", "detail", "evidence"}


def test_run_applies_the_limits_given(tmp_path):
    program = tmp_path / "slow.py"
    program.write_text("import time\ntime.sleep(30)\n")
    done = evalkit("sandbox", "run", str(program), "--timeout", "1", "--json")
    assert json.loads(done.stdout)["status"] == "timeout"
    big = tmp_path / "big.py"
    big.write_text("x = bytearray(400 * 1024 * 1024)\n")
    done = evalkit("sandbox", "run", str(big), "--memory", "200", "--json")
    assert json.loads(done.stdout)["status"] == "oom"


def test_run_without_json_prints_a_summary(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text("assert 1 == 2, 'nope'\n")
    done = evalkit("sandbox", "run", str(program))
    assert done.returncode == 1  # the program did not pass
    assert "failed" in done.stdout and "AssertionError: nope" in done.stdout


HOSTILE_OUTPUT = (
    "import sys\n"
    "print('\\x1b[2J\\x1b]0;pwned title\\x07\\x1b]52;c;ZWNobyBwd25lZA==\\x07 [bold]x[/bold]')\n"
    "print('\\u202eevil', file=sys.stderr)\n"
    "print('[/]', file=sys.stderr)\n"
    "sys.exit(3)\n")


def test_run_plain_output_shows_hostile_output_inert(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text(HOSTILE_OUTPUT)
    done = evalkit("sandbox", "run", str(program))
    # exit 1: the program did not pass (it exits 3); "[/]" as the last stderr line used to crash
    assert done.returncode == 1, done.stderr
    assert not any(ch in done.stdout for ch in "\x1b\x07\u202e")
    assert "\\x1b[2J\\x1b]0;pwned title\\x07" in done.stdout  # shown, escaped
    assert "[bold]x[/bold]" in done.stdout and "[/]" in done.stdout  # markup shown as text
    assert "\\u202eevil" in done.stdout


def test_run_json_keeps_hostile_output_exact_and_escaped(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text(HOSTILE_OUTPUT)
    done = evalkit("sandbox", "run", str(program), "--json")
    assert "\x1b" not in done.stdout  # JSON escapes it: \u001b
    result = json.loads(done.stdout)
    assert result["stdout"].startswith("\x1b[2J\x1b]0;pwned title\x07")
    assert result["stderr"] == "\u202eevil\n[/]\n"


@pytest.mark.parametrize("args, message", [
    (["sandbox", "run", "/no/such/file.py"], "no such file: /no/such/file.py"),
    (["sandbox", "run", "{prog}", "--timeout", "-2"], "timeout_s must be a positive number"),
    (["sandbox", "run", "{prog}", "--memory", "0"], "memory_mb must be a positive number"),
    (["sandbox", "run", "{prog}", "--backend", "jail"], "unknown sandbox backend 'jail'"),
    (["sandbox", "selftest", "--backend", "none"], "isolates nothing"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    program = tmp_path / "prog.py"
    program.write_text("print(1)\n")
    done = evalkit(*[a.replace("{prog}", str(program)) for a in args])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip()[7:]}"]
    assert message in done.stderr


def test_run_with_none_backend_warns(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text("print(1)\n")
    done = evalkit("sandbox", "run", str(program), "--backend", "none", "--json")
    assert json.loads(done.stdout)["status"] == "passed"
    assert "NO isolation" in done.stderr


@pytest.mark.slow
def test_selftest_runs_the_hostile_suite_and_reports_it():
    done = evalkit("sandbox", "selftest")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "self-test passed" in done.stdout
    assert "fork_bomb" in done.stdout and "read_secrets" in done.stdout
    assert "hostile programs contained" in done.stdout
