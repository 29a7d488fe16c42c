"""Fixtures shared across the suite: data dir, an isolated cache, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("EVALKIT_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()
os.environ["EVALKIT_DATA_DIR"] = str(DATA_DIR)
# One cache for the whole session (the builtin model is converted once), never the user's.
os.environ.setdefault("EVALKIT_CACHE_DIR", str(ROOT / ".pytest_cache" / "evalkit-cache"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.exists():
        pytest.fail(f"benchmark data not found at {DATA_DIR}; set EVALKIT_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def builtin_model():
    """The embedded SmolLM2-135M-Instruct, materialized once per session."""
    from evalkit.checkpoints import resolve

    return resolve("builtin:smollm2-135m")


def make_tiny_llama(path: Path, *, seed: int = 0, layers: int = 2,
                    tokenizer_from: Path | None = None) -> Path:
    """A 2-layer random llama saved as safetensors (seconds). Uses the builtin's tokenizer when
    ``tokenizer_from`` is given so vLLM and chat templates work on it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    vocab = 49152 if tokenizer_from else 512
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(path)
    if tokenizer_from:
        AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, builtin_model) -> Path:
    """A tiny random llama with the builtin's tokenizer (works in transformers and vLLM)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama",
                           tokenizer_from=builtin_model.path)
