"""Tiny random models built from a config, for tests that need real weights in seconds."""

from __future__ import annotations

from pathlib import Path


def make_tiny_llama(path: Path, *, seed: int = 0, layers: int = 2,
                    tokenizer_from: Path | None = None, for_vllm: bool = False) -> Path:
    """A 2-layer random llama saved as safetensors (seconds). Uses the builtin's tokenizer when
    ``tokenizer_from`` is given so chat templates work on it. ``for_vllm`` makes the heads 64
    wide: vLLM's CPU attention has no kernel for head_dim 16."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    vocab = 49152 if tokenizer_from else 512
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=128 if for_vllm else 64, intermediate_size=256 if for_vllm
        else 128, num_hidden_layers=layers, num_attention_heads=2 if for_vllm else 4,
        num_key_value_heads=1 if for_vllm else 2, head_dim=64 if for_vllm else 16,
        max_position_embeddings=2048,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(path)
    if tokenizer_from:
        AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(path)
    return path
