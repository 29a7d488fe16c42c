"""Ray data parallelism on a real local cluster (2 CPUs, one per module): 2 replicas of a tiny
model give byte for byte the samples of one local engine, a replica killed mid-run is replaced
with no item lost or doubled, a driver killed with kill -9 resumes, and code runs in the
cluster's per-node sandbox pools."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from evalkit.checkpoints import resolve
from evalkit.run.format import load_run
from evalkit.run.runner import RunOptions, open_backend, run_task

ray = pytest.importorskip("ray")
LIMIT = 10


@pytest.fixture(scope="module", autouse=True)
def cluster():
    from evalkit.scale.ray_backend import connect

    assert connect("local", num_cpus=2)
    yield
    ray.shutdown()


def options(out: Path, **kw) -> RunOptions:
    return RunOptions(**{"backend": "hf", "limit": LIMIT, "max_tokens": 24, "out_dir": out,
                         "progress": False, "use_cache": False,
                         "backend_options": {"batch_size": 2, "dtype": "auto"}, **kw})


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny_llama) -> Path:
    """The reference: the same run on one local engine, no Ray."""
    return run_task(resolve(tiny_llama), "gsm8k", options(tmp_path_factory.mktemp("local")))


def test_two_replicas_equal_one_local_engine(local_run, tiny_llama, tmp_path):
    folder = run_task(resolve(tiny_llama), "gsm8k", options(tmp_path, ray="local", replicas=2))
    assert (folder / "samples.jsonl").read_bytes() == (local_run / "samples.jsonl").read_bytes()
    assert (folder / "metrics.json").read_bytes() == (local_run / "metrics.json").read_bytes()
    run, _, _ = load_run(folder).dicts()
    assert run["backend"]["replicas"] == 2 and run["counts"]["generated"] == LIMIT
    # the same run_key as the local run: Ray shares its folders and its cache entries
    assert folder.name == local_run.name


def test_a_killed_replica_is_replaced_and_nothing_is_lost(local_run, tiny_llama, tmp_path):
    ckpt = resolve(tiny_llama)
    opts = options(tmp_path, ray="local", replicas=2)
    with open_backend(ckpt, opts) as backend:
        replicas = backend.start()
        victim = replicas.pids[0]
        killed = threading.Event()

        def kill_when_generating() -> None:
            deadline = time.time() + 300
            while time.time() < deadline:
                found = list(tmp_path.glob("gsm8k/*/samples.jsonl"))
                if found and found[0].stat().st_size > 0:
                    os.kill(victim, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.02)

        watcher = threading.Thread(target=kill_when_generating)
        watcher.start()
        folder = run_task(ckpt, "gsm8k", opts, backend=backend)
        watcher.join()
        assert killed.is_set() and replicas.replaced == 1
        assert replicas.pids[0] != victim
    samples = [json.loads(line) for line in (folder / "samples.jsonl").open()]
    assert sorted(s["doc_id"] for s in samples) == sorted(str(i) for i in range(LIMIT))
    assert (folder / "samples.jsonl").read_bytes() == (local_run / "samples.jsonl").read_bytes()


def test_code_runs_in_each_nodes_sandbox_pool():
    from evalkit.sandbox import Limits
    from evalkit.scale.ray_sandbox import RaySandbox

    sandbox = RaySandbox("process", workers_per_node=2)
    try:
        assert sandbox.workers == 2  # one node here, with its own pool of 2
        results = sandbox.run_many([("print('ok')", Limits(timeout_s=10)),
                                    ("raise SystemExit(3)", Limits(timeout_s=10)),
                                    ("while True: pass", Limits(timeout_s=1))])
        assert [r.status for r in results] == ["passed", "failed", "timeout"]
    finally:
        sandbox.close()


@pytest.mark.slow
def test_driver_killed_with_kill_9_resumes(local_run, tiny_llama, tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "evalkit", "run", "--model", str(tiny_llama), "--task", "gsm8k",
           "--limit", str(LIMIT), "--backend", "hf", "--batch-size", "2", "--max-tokens", "24",
           "--out", str(out), "--no-cache", "--ray", "local", "--replicas", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    samples_file, deadline = None, time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list(out.glob("gsm8k/*/samples.jsonl"))
        if found and found[0].read_text().count("\n") >= 2:
            samples_file = found[0]
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
    proc.wait()
    assert samples_file is not None, "the run never wrote samples"
    kept = samples_file.read_text().count("\n")
    assert 2 <= kept < LIMIT, "the kill came too late to test anything"
    assert json.loads((samples_file.parent / "run.json").read_text())["status"] == "running"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run, _, _ = load_run(samples_file.parent).dicts()
    assert run["counts"]["resumed"] == kept and run["counts"]["generated"] == LIMIT - kept
    assert samples_file.read_bytes() == (local_run / "samples.jsonl").read_bytes()


@pytest.mark.slow
def test_the_embedded_model_on_vllm_in_a_replica_equals_a_local_engine(builtin_model, tmp_path):
    # vLLM inside a Ray actor (its engine core then a child of the actor) must give the samples
    # of the same engine started here: greedy, the same options, the same items.
    def vllm_options(out: Path, **kw) -> RunOptions:
        return RunOptions(backend="vllm", limit=3, max_tokens=16, out_dir=out, progress=False,
                          use_cache=False, backend_options={
                              "tensor_parallel_size": 1, "max_model_len": 2048, "dtype": "auto"},
                          **kw)

    local = run_task(builtin_model, "gsm8k", vllm_options(tmp_path / "local"))
    remote = run_task(builtin_model, "gsm8k", vllm_options(tmp_path / "ray", ray="local",
                                                          replicas=1))
    assert (remote / "samples.jsonl").read_bytes() == (local / "samples.jsonl").read_bytes()
    run, _, _ = load_run(remote).dicts()
    assert run["backend"]["replicas"] == 1 and run["counts"]["generated"] == 3
