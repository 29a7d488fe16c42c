"""Folders written by `evalkit finetune` (full, HFT, LoRA, rsLoRA) load as they are in evalkit's
vLLM backend, and what was trained shows up in what vLLM generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import make_tiny_llama

from evalkit.checkpoints import resolve
from evalkit.finetune import FinetuneConfig, finetune

SAY = "Say the word:"


def teach(folder: Path, base: Path, name: str, words: dict[str, str], method: str,
          epochs: int = 15, **options):
    """Fine-tune ``base`` to answer each prompt with its word, three times."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": f" {w} {w} {w}"}) + "\n"
                            for p, w in words.items()))
    return resolve(finetune(FinetuneConfig(
        base=str(base), data=str(data), out=folder / name, method=method, epochs=epochs,
        batch_size=len(words), lr=1e-2, rank=8, **options)))


def first_words(backend, requests) -> list[str]:
    results = dict(backend.generate(requests))
    return [results[i][0].text.split()[0] for i in range(len(requests))]


@pytest.mark.slow
def test_every_method_loads_in_the_vllm_backend(builtin_model, tmp_path):
    from evalkit.models import GenRequest, load_backend

    tiny = make_tiny_llama(tmp_path / "tiny", tokenizer_from=builtin_model.path, for_vllm=True)
    # A full fine-tune that knows three words (a random model's LM head knows none), then
    # HFT, LoRA and rsLoRA runs on top of it that each change the answer to SAY.
    full = teach(tmp_path, tiny, "full", {SAY: "zebra", "Other word:": "koala",
                                          "Third word:": "panda"}, "full", epochs=30)
    hft = teach(tmp_path, full.path, "hft", {SAY: "panda"}, "hft")
    lora = teach(tmp_path, full.path, "lora", {SAY: "koala"}, "lora")
    rslora = teach(tmp_path, full.path, "rslora", {SAY: "panda"}, "lora", rslora=True)
    assert lora.kind == rslora.kind == "adapter" and lora.base.fingerprint == full.fingerprint

    # One engine serves the full model and both adapters (LoRA requests on the same base).
    requests = [GenRequest(prompt=SAY, max_tokens=6, adapter=a) for a in (None, lora, rslora)]
    with load_backend("vllm", full, adapters=[lora, rslora]) as backend:
        # A 2-layer model does not learn to count to three: the first word is the check.
        assert first_words(backend, requests) == ["zebra", "koala", "panda"]
    with load_backend("vllm", hft) as backend:
        assert first_words(backend, [GenRequest(prompt=SAY, max_tokens=6)]) == ["panda"]
