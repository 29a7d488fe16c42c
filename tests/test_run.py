"""The run store end to end: a complete run, cache hits, and resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from evalkit.checkpoints import resolve
from evalkit.run.format import load_run
from evalkit.run.runner import RunOptions, run_task


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """These tests count generations: they must not see another session's cache."""
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))


def options(tmp_path, **kw):
    return RunOptions(**{"backend": "hf", "limit": 6, "max_tokens": 16,
                         "out_dir": tmp_path / "runs", "progress": False, **kw})


def test_run_writes_a_complete_folder(tmp_path, tiny_llama):
    folder = run_task(resolve(tiny_llama), "gsm8k", options(tmp_path))
    run, samples, metrics = load_run(folder).dicts()
    assert run["status"] == "complete" and run["task"]["version"] == "3.0"
    assert run["checkpoint"]["fingerprint"] == resolve(tiny_llama).fingerprint
    assert run["backend"]["engine_id"] and run["counts"]["generated"] == 6
    assert sorted(int(s["doc_id"]) for s in samples) == list(range(6))
    s = samples[0]
    assert set(s) >= {"prompt_hash", "prompt", "completion", "extracted", "scores", "target"}
    assert s["prompt"].startswith("Question:") and len(s["prompt_hash"]) == 16
    m = metrics["metrics"]["exact_match,strict-match"]
    assert m["n"] == 6 and m["aggregation"] == "mean"


def test_identical_rerun_is_served_from_cache(tmp_path, tiny_llama):
    ckpt = resolve(tiny_llama)
    first = run_task(ckpt, "gsm8k", options(tmp_path / "a"))
    second = run_task(ckpt, "gsm8k", options(tmp_path / "b"))  # another folder, same config
    run, samples, _ = load_run(second).dicts()
    assert run["counts"]["generated"] == 0 and run["counts"]["cached"] == 6
    assert run["backend"]["engine_id"] is None  # no model was loaded at all
    completions = {s["doc_id"]: s["completion"] for s in load_run(first).dicts()[1]}
    assert {s["doc_id"]: s["completion"] for s in samples} == completions
    third = run_task(ckpt, "gsm8k", options(tmp_path / "c", use_cache=False))
    assert load_run(third).dicts()[0]["counts"]["generated"] == 6
    # a different generation setting is a different run and a cache miss
    fourth = run_task(ckpt, "gsm8k", options(tmp_path / "a", max_tokens=8))
    assert fourth != first and load_run(fourth).dicts()[0]["counts"]["generated"] == 6


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path, tiny_llama):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "evalkit", "run", "--model", str(tiny_llama), "--task", "gsm8k",
           "--limit", "40", "--backend", "hf", "--batch-size", "2", "--max-tokens", "96",
           "--out", str(out), "--no-cache"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    samples_file = None
    deadline = time.time() + 300
    while time.time() < deadline:
        found = list(out.glob("gsm8k/*/samples.jsonl"))
        if found and found[0].read_text().count("\n") >= 6:
            samples_file = found[0]
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert samples_file is not None, "the run never wrote samples"
    folder = samples_file.parent
    assert json.loads((folder / "run.json").read_text())["status"] == "running"
    assert not (folder / "metrics.json").exists()

    lines = samples_file.read_text().splitlines(keepends=True)
    complete = [json.loads(line) for line in lines if line.endswith("\n")]
    assert 6 <= len(complete) < 40, "the kill came too late to test anything"
    with samples_file.open("a") as f:  # a torn write, as if killed mid-line
        f.write('{"doc_id": "39", "sample_idx": 0, "compl')

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run, samples, _ = load_run(folder).dicts()
    keys = [(s["doc_id"], s["sample_idx"]) for s in samples]
    assert len(keys) == len(set(keys)) == 40
    assert samples[:len(complete)] == complete  # finished items kept, not regenerated
    assert run["counts"]["resumed"] == len(complete)
    assert run["counts"]["generated"] == 40 - len(complete)
