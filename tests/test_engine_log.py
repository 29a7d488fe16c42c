"""An engine's own output (its child processes' too) lands in engine.log, evalkit's console
still reaches the terminal, and --verbose (no log folder) leaves everything on the terminal."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evalkit.models.engine_log import warnings_line

SCRIPT = textwrap.dedent("""
    import os, subprocess, sys
    from pathlib import Path
    from evalkit.models.engine_log import EngineLog, log_into, terminal_stderr
    from evalkit.progress import console

    folder = None if sys.argv[1] == "-" else Path(sys.argv[1])
    with log_into(folder):
        log = EngineLog.open("test engine")
        with log.starting("test"):
            # a child process, as vLLM's engine core is: it inherits fds 1 and 2
            subprocess.run([sys.executable, "-c", "import sys; print('child chatter'); "
                            "e = sys.stderr; "
                            "print('WARNING 12-03 [x.py:1] the KV cache is tiny', file=e); "
                            "print('Traceback (most recent call last): child', file=e)"])
            print("python chatter", file=sys.stderr)
            console.print("evalkit progress line")
            os.write(terminal_stderr(), b"last resort line\\n")  # a hung exit's last word
        log.close()
    print("evalkit error line", file=sys.stderr)
""")


def _run(folder: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, folder], capture_output=True,
                          text=True, timeout=60, check=True)


def test_engine_output_goes_to_the_log_and_evalkit_output_to_the_terminal(tmp_path: Path):
    done = _run(str(tmp_path))
    log = (tmp_path / "engine.log").read_text()
    for chatter in ("child chatter", "the KV cache is tiny", "Traceback", "python chatter"):
        assert chatter in log
        assert chatter not in done.stdout + done.stderr.replace(
            "engine: 1 warning (first: the KV cache is tiny)", "")
    assert "evalkit progress line" in done.stderr and "evalkit error line" in done.stderr
    assert "last resort line" in done.stderr
    assert f"engine log: {tmp_path / 'engine.log'}" in done.stderr  # the path, once
    assert done.stderr.count("engine log:") == 1
    assert f"engine: 1 warning (first: the KV cache is tiny); see {tmp_path}" in done.stderr


def test_verbose_keeps_the_raw_output_on_the_terminal(tmp_path: Path):
    done = _run("-")
    assert "child chatter" in done.stdout
    assert "the KV cache is tiny" in done.stderr and "python chatter" in done.stderr
    assert "engine log" not in done.stderr and not list(tmp_path.iterdir())


@pytest.mark.parametrize(("text", "line"), [
    ("INFO a\nINFO b\n", None),
    ("(EngineCore pid=1) WARNING 12-03 13:51:53 [vllm.py:1] Enforce eager set, ...\n"
     "WARNING 12-03 13:51:53 [cpu.py:9] libtcmalloc is not found in LD_PRELOAD.\n", None),
    ("(MainProcess pid=1) WARNING 12-03 19:37:00 [arg_utils.py:1945] The global random seed is "
     "set to 1234. Since VLLM_ENABLE_V1_MULTIPROCESSING is set to False, this may affect ...\n"
     "(MainProcess pid=1) WARNING 12-03 19:37:15 [cpu_worker.py:140] CPU backend doesn't allow "
     "to use `torch.set_num_threads` after the thread binding, skip it.\n"
     "(MainProcess pid=1) WARNING 12-03 19:37:07 [dispatcher.py:164] Kernel vllm.v1.x is already "
     "registered. Overwriting.\n", None),
    ("x.py:3: UserWarning: padding side\n(EngineCore pid=1) WARNING 12-03 13:51:53 "
     "[cpu.py:2] NUMA off\nWARNING 12-03 1:2:3 [a.py:9] max_model_len too long\n",
     "engine: 2 warnings (first: padding side); see L"),
])
def test_the_warnings_line(text, line):
    assert warnings_line(text, Path("L")) == line


def test_the_transformers_backend_logs_there_too(tmp_path: Path, tiny_llama: Path):
    done = subprocess.run(
        [sys.executable, "-m", "evalkit", "run", "--model", str(tiny_llama), "--task", "gsm8k",
         "--limit", "2", "--max-tokens", "4", "--backend", "hf", "--out", str(tmp_path),
         "--no-cache"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "engine.log").read_text()
    assert f"transformers model for {tiny_llama}" in log
    # the same 2 items on the terminal and in run.json; nothing of transformers' own output
    assert done.stderr.count("engine log:") == 1 and "generated 2" in done.stdout + done.stderr
    assert not [line for line in done.stderr.splitlines()
                if "warn" in line.lower() and not line.startswith("engine:")]
