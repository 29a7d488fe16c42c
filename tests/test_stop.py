"""Stopping `evalkit run` any way, at any moment, with the real vLLM engine.

Each case starts `evalkit run` on a tiny random llama, waits for a moment (the engine starting,
generating, scoring), stops it (SIGTERM as CI runners send, Ctrl-C to the whole process group as
a terminal sends, kill -9 as a cancelled CI job does) and asserts: no process evalkit started
outlives it by more than a few seconds; a signal ends with exit 128 + signal number and the one
line "interrupted; resume with the same command" (no traceback, no leaked shared memory
warning); and what is on disk is a resumable run, never a folder mistaken for results.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_tasks import write_data, write_task
from tiny_models import make_tiny_llama

from evalkit.cli.exits import INTERRUPTED
from evalkit.run.format import load_run

pytestmark = pytest.mark.slow

# A code task whose every program sleeps until the sandbox's wall-clock limit: scoring takes
# seconds after generation has finished, which is the moment the "scoring" case stops at.
SLOW_CODE = """\
name: slowcode
version: "1"
dataset: {splits: {test: {file: toy/test.jsonl}}}
split: test
doc_id: "{{task_id}}"
prompt: "{{prompt}}"
target: "{{test}}"
generation: {until: ["\\n"], max_tokens: 4}
scorer: {name: code, program: humaneval, k: [1], cpu_s: 5.0, wall_s: 8.0}
"""
SLEEPER = {"prompt": "# ", "entry_point": "print",
           "test": "import time\ntime.sleep(60)\ndef check(f):\n    pass"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, builtin_model) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("stop") / "tiny",
                           tokenizer_from=builtin_model.path, for_vllm=True)


@pytest.fixture(scope="module")
def slow_code(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("slowcode")
    rows = [{"task_id": f"slow/{i}", **SLEEPER} for i in range(2)]
    return write_task(root, SLOW_CODE), write_data(root, rows)


def _start(args: list[str], env: dict) -> subprocess.Popen:
    # Its own session: a group signal reaches evalkit and the engine as a terminal's Ctrl-C
    # does, and never this test.
    return subprocess.Popen([sys.executable, "-m", "evalkit", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **env})


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _engine_starting(out: Path) -> bool:
    # vLLM logs its options as the engine starts, in this process or in its own
    log = out / "engine.log"
    return log.exists() and "non-default args" in log.read_text(errors="replace")


def _engine_processes(proc: subprocess.Popen) -> bool:
    def is_engine(p: psutil.Process) -> bool:
        try:
            return any("EngineCore" in a or "spawn_main" in a for a in p.cmdline())
        except psutil.Error:
            return False

    return any(is_engine(p) for p in _tree(proc.pid))


def _wait(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"evalkit ended too soon:\n{proc.stderr.read()}"
        if ready():
            return
        time.sleep(0.2)
    raise AssertionError("the moment never came")


def _lines(folder_glob: list[Path]) -> int:
    return sum(f.read_text().count("\n") for f in folder_glob)


CASES = {
    # moment, how to stop, the engine in its own processes (vLLM's default off CPU) or in
    # evalkit's (evalkit's default on CPU). A kill -9 gives evalkit no chance to stop the
    # engine's processes: the engine guard's job, tested where there are some.
    "engine start, SIGTERM": ("start", signal.SIGTERM, False),
    "engine start, kill -9": ("start", signal.SIGKILL, True),
    "generation, Ctrl-C": ("generation", signal.SIGINT, False),
    "generation, kill -9": ("generation", signal.SIGKILL, True),
    "scoring, SIGTERM": ("scoring", signal.SIGTERM, False),
}


@pytest.mark.parametrize("case", CASES)
def test_stop(case, tmp_path, tiny, slow_code):
    moment, how, engine_processes = CASES[case]
    out = tmp_path / "runs"
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "EVALKIT_CACHE_DIR": str(tmp_path / "cache"),
           "VLLM_ENABLE_V1_MULTIPROCESSING": "1" if engine_processes else "0"}
    if moment == "scoring":
        task, data = slow_code
        args = ["--model", str(tiny), "--task", str(task), "--data-dir", str(data),
                "--out", str(out), "--workers", "2"]
    else:
        args = ["--model", str(tiny), "--task", "gsm8k", "--limit", "60", "--max-tokens", "128",
                "--out", str(out)]
    proc = _start(args, env)
    samples = lambda: list(out.glob("*/*/samples.jsonl"))  # noqa: E731
    if moment == "start":
        _wait(proc, (lambda: _engine_processes(proc)) if engine_processes
              else (lambda: _engine_starting(out)))
        assert not list(out.glob("*/*/run.json")), "the engine was up already"
    elif moment == "generation":
        _wait(proc, lambda: _lines(samples()) >= 2)
    else:  # generation done (4 tokens for 2 items), programs sleeping in the sandbox
        _wait(proc, lambda: list(out.glob("*/*/run.json")))
        time.sleep(3)
        assert _lines(samples()) == 0, "scoring finished before the signal"
    started = _tree(proc.pid)
    assert started, "evalkit had started no process"
    if how == signal.SIGINT:
        os.killpg(proc.pid, how)  # a terminal's Ctrl-C: the engine gets it too
    else:
        proc.send_signal(how)
    proc.wait(timeout=120)
    stderr = proc.stderr.read()
    deadline = time.time() + 10  # "no engine process outlives it by more than a few seconds"
    while time.time() < deadline and any(_alive(p) for p in started):
        time.sleep(0.2)
    left = [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in started if _alive(p)]
    for p in started:  # leave nothing behind even when the test fails
        if _alive(p):
            p.kill()
    assert not left, f"processes outlived evalkit: {left}"

    if how != signal.SIGKILL:
        assert proc.returncode == 128 + how, stderr
        assert stderr.strip().splitlines()[-1] == INTERRUPTED, stderr
        assert "Traceback" not in stderr and "leaked" not in stderr, stderr[-4000:]
        # the engine's own output (its processes' logs, a dying child's traceback) is in the
        # log file, not on the terminal
        assert not re.search(r"^\(?(INFO|WARNING|EngineCore)", stderr, re.M), stderr[-4000:]
        assert (out / "engine.log").stat().st_size > 0
    runs = list(out.glob("*/*/run.json"))
    if moment == "start":
        assert not runs, "a run folder was created for a run that never ran"
        return
    assert len(runs) == 1
    folder = runs[0].parent
    assert json.loads(runs[0].read_text())["status"] == "running"
    assert not (folder / "metrics.json").exists()
    for line in (folder / "samples.jsonl").read_text().splitlines(keepends=True):
        json.loads(line)  # what was written is whole lines (a torn last one is cut on resume)
    if moment == "scoring":  # generations were cached: resuming needs no engine
        done = subprocess.run([sys.executable, "-m", "evalkit", "run", *args],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, **env})
        assert done.returncode == 0, done.stderr
        held = load_run(folder)
        assert held.header.counts["cached"] == 2 and held.header.counts["generated"] == 0
        assert len(held.samples) == 2
