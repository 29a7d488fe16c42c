"""Folders written by `evalkit finetune` load as they are in evalkit's vLLM backend, and what was
trained shows up in what vLLM generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.checkpoints import resolve
from evalkit.finetune import FinetuneConfig, finetune

PROMPT = "Say the word:"


def tiny_llama_for_vllm(path: Path, tokenizer_from: Path) -> Path:
    """Like conftest's tiny llama but with head_dim 64: vLLM's CPU attention has no kernel for
    the fixture's head_dim 16."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=512,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(path)
    return path


def teach(folder: Path, base: Path, name: str, pairs: list[tuple[str, str]], method: str,
          epochs: int) -> Path:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs))
    return finetune(FinetuneConfig(base=str(base), data=str(data), out=folder / name,
                                   method=method, epochs=epochs, batch_size=len(pairs), lr=1e-2,
                                   rank=8))


@pytest.mark.slow
def test_full_model_and_lora_adapter_load_in_the_vllm_backend(builtin_model, tmp_path):
    from evalkit.models import GenRequest, load_backend

    base = tiny_llama_for_vllm(tmp_path / "tiny", builtin_model.path)
    # A full fine-tune that knows two words, then a LoRA adapter on top of it that swaps the
    # answer to the prompt: one engine serves both folders (base request and LoRA request).
    full = resolve(teach(tmp_path, base, "full", [(PROMPT, " zebra zebra zebra"),
                                                  ("Other word:", " koala koala koala")],
                         "full", epochs=15))
    adapter = resolve(teach(tmp_path, full.path, "lora", [(PROMPT, " koala koala koala")],
                            "lora", epochs=15))
    assert adapter.kind == "adapter" and adapter.base.fingerprint == full.fingerprint

    requests = [GenRequest(prompt=PROMPT, max_tokens=6),
                GenRequest(prompt=PROMPT, max_tokens=6, adapter=adapter)]
    with load_backend("vllm", full, adapters=[adapter]) as backend:
        results = dict(backend.generate(requests))
    # A 2-layer model does not learn to count its three words: the first one is the check.
    assert results[0][0].text.startswith(" zebra")
    assert results[1][0].text.startswith(" koala")
