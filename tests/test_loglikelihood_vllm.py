"""vLLM (token-id prompts with prompt logprobs; one next-token request for one-token answers of
one context) and transformers must give the same loglikelihoods on the embedded model, and the
same answers through the runner. LoRA engines: test_loglikelihood_vllm_lora.py."""

from __future__ import annotations

import json

import pytest

from evalkit.models.base import LoglikelihoodRequest

pytestmark = pytest.mark.slow

# Summed logprobs of the two fp32 backends differ by ~1e-5 per token (kernels, summation
# order); these bounds leave room for that and nothing else.
PER_REQUEST = 2e-3
PER_TOKEN = 1e-4


@pytest.fixture(scope="module")
def engines(builtin_model):
    from evalkit.models import load_backend

    vllm = load_backend("vllm", builtin_model, max_model_len=2048)
    hf = load_backend("hf", builtin_model, batch_size=8)
    yield vllm, hf
    vllm.close()
    hf.close()


def requests_of(tasks: dict[str, int], adapter=None, max_length: int = 2046,
                rolling_chars: int | None = None) -> list[LoglikelihoodRequest]:
    """Each task's first items' (context, continuation) pairs, and one WikiText article."""
    from evalkit.tasks import load_task

    requests = []
    for name, n in tasks.items():
        task = load_task(name)
        for d in task.docs(n if name != "mmlu" else 1)[:n]:
            requests += [LoglikelihoodRequest(c, x, max_length=max_length, adapter=adapter)
                         for c, x in task.loglikelihood_pairs(d, task.prompt(d))]
    wiki = load_task("wikitext")
    page = wiki.target(wiki.docs(1)[0])[:rolling_chars]
    requests.append(LoglikelihoodRequest("", page, max_length=256, rolling=True,
                                         adapter=adapter))
    return requests


def assert_agree(a: dict, b: dict, requests: list[LoglikelihoodRequest]) -> float:
    assert sorted(a) == sorted(b) == list(range(len(requests)))
    for i, r in enumerate(requests):
        assert a[i].n_tokens == b[i].n_tokens
        tol = PER_REQUEST if not r.rolling else PER_TOKEN * a[i].n_tokens
        assert abs(a[i].logprob - b[i].logprob) < tol, (i, r.continuation[:40])
        assert a[i].is_greedy == b[i].is_greedy, (i, r.continuation[:40])
    return max(abs(a[i].logprob - b[i].logprob) for i in range(len(requests)))


def test_vllm_and_hf_loglikelihoods_agree(engines, data_dir):
    vllm, hf = engines
    requests = requests_of({"mmlu": 6, "arc_challenge": 4})
    worst = assert_agree(dict(vllm.loglikelihood(requests)), dict(hf.loglikelihood(requests)),
                         requests)
    print(f"max |vllm - hf| over {len(requests)} requests: {worst:.2e}")


def test_runs_on_both_backends_pick_the_same_answers(engines, builtin_model, tmp_path, data_dir):
    from evalkit.run.runner import RunOptions, run_task

    vllm, hf = engines
    picks = {}
    for backend in (vllm, hf):
        options = RunOptions(backend=backend.name, limit=6, out_dir=tmp_path, progress=False,
                             use_cache=False, data_dir=data_dir)
        folder = run_task(builtin_model, "arc_easy", options, backend=backend)
        samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
        picks[backend.name] = {s["doc_id"]: (s["completion"], s["scores"]) for s in samples}
    assert picks["vllm"] == picks["hf"]


def test_lm_eval_tasks_through_the_vllm_engine(engines, builtin_model, tmp_path, data_dir,
                                               monkeypatch):
    """lm_eval: tasks answered by the real vLLM engine: a multiple-choice task picks what the
    hf backend picks item by item; a generate_until task is scored by lm-eval's filters."""
    from test_lm_eval import write_include

    from evalkit.run.format import load_run
    from evalkit.run.runner import RunOptions, run_task

    (tmp_path / "include").mkdir()
    monkeypatch.setenv("EVALKIT_LM_EVAL_INCLUDE",
                       str(write_include(tmp_path / "include", data_dir)))
    vllm, hf = engines
    scores = {}
    for backend in (vllm, hf):
        options = RunOptions(backend=backend.name, limit=4, out_dir=tmp_path / backend.name,
                             progress=False, use_cache=False)
        _, samples, _ = load_run(run_task(builtin_model, "lm_eval:arc_easy", options,
                                          backend=backend)).dicts()
        scores[backend.name] = {s["doc_id"]: s["scores"] for s in samples}
    assert len(scores["vllm"]) == 4 and scores["vllm"] == scores["hf"]
    options = RunOptions(backend="vllm", limit=2, max_tokens=16, out_dir=tmp_path / "gen",
                         progress=False, use_cache=False)
    run, samples, metrics = load_run(run_task(builtin_model, "lm_eval:gsm8k", options,
                                              backend=vllm)).dicts()
    assert run["counts"]["generated"] == 2 and run["backend"]["name"] == "vllm"
    assert all(set(s["filtered_resps"]) == {"strict-match", "flexible-extract"}
               and s["completion"] for s in samples)
    assert metrics["metrics"]["exact_match,flexible-extract"]["n"] == 2
