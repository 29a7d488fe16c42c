"""Every bad input: one clear line on stderr, exit code 2, no traceback, no run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_checkpoints import _corrupt, _no_weights
from test_tasks import MINIMAL, write_data, write_task

EVALKIT = [sys.executable, "-m", "evalkit"]


def evalkit(*args, env=None):
    return subprocess.run([*EVALKIT, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_clean_error(proc, message, out):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists() or not any(out.rglob("run.json")), "a run folder was left behind"


def _gguf(tmp_path):
    import gguf

    path = tmp_path / "bert.gguf"
    w = gguf.GGUFWriter(str(path), "nomic-bert")
    w.add_tensor("w", np.zeros((2, 2), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _empty_dataset(tmp_path):
    return write_task(tmp_path, MINIMAL.format(name="toy")), write_data(tmp_path, [])


CASES = {
    "missing path": (lambda t: ["--model", str(t / "nope")], "checkpoint not found"),
    "folder without weights": (lambda t: ["--model", str(_no_weights(t))], "no weights"),
    "corrupt safetensors": (lambda t: ["--model", str(_corrupt(t))], "corrupt safetensors"),
    "unsupported gguf": (lambda t: ["--model", str(_gguf(t))], "is not supported"),
    "unknown task": (lambda t: ["--task", "nosuchtask"], "unknown task 'nosuchtask'"),
    "malformed task yaml": (lambda t: ["--task", str(write_task(t, "name: [x"))],
                            "malformed task file"),
    "bad task field": (lambda t: ["--task", str(write_task(t, MINIMAL.format(name="toy")
                                                             + "scorer: 3\n"))],
                       "field 'scorer'"),
    "empty dataset": (lambda t: ["--task", str(_empty_dataset(t)[0]),
                                 "--data-dir", str(t / "data")], "is empty"),
    "data dir without the file": (lambda t: ["--data-dir", str(t)], "not found in data dir"),
    "limit zero": (lambda t: ["--limit", "0"], "--limit must be a positive"),
    "limit negative": (lambda t: ["--limit", "-3"], "--limit must be a positive"),
    "unknown backend": (lambda t: ["--backend", "tgi"], "unknown backend 'tgi'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, tiny_llama):
    make_args, message = CASES[case]
    out = tmp_path / "runs"
    extra = make_args(tmp_path)
    args = ["run", "--model", str(tiny_llama), "--task", "gsm8k", "--limit", "2",
            "--backend", "hf", "--out", str(out)]
    for flag in ("--model", "--task", "--limit", "--backend"):  # the case's value wins
        if flag in extra:
            i = args.index(flag)
            del args[i:i + 2]
    assert_clean_error(evalkit(*args, *extra), message, out)


def test_help_is_fast_and_does_not_import_torch():
    code = ("import sys, evalkit.cli; "
            "print(json.dumps(['torch' in sys.modules, 'vllm' in sys.modules, "
            "'transformers' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True,
                          text=True, check=True)
    assert json.loads(proc.stdout) == [False, False, False]
    assert evalkit("--help").returncode == 0
