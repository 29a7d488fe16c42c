"""Load the base model and make the right parameters trainable: full, LoRA (peft) or HFT."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.finetune import hft
from evalkit.finetune.schema import FinetuneConfig, HftInfo, LoraInfo


def load_model(path: Path) -> tuple[Any, Any]:
    """The model in fp32 for training (master weights), and the dtype it is stored in."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # evalkit draws its own progress bar
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    except (OSError, ValueError) as exc:
        raise EvalkitError(f"cannot load {path} as a causal language model: {exc}") from None
    stored_dtype = model.dtype
    model.float()
    model.config.use_cache = False  # training never reuses a KV cache
    return model, (stored_dtype if stored_dtype.is_floating_point else torch.float32)


def prepare(model: Any, config: FinetuneConfig) -> tuple[Any, LoraInfo | None, HftInfo | None]:
    """Apply the method; return the (possibly wrapped) model and what the manifest records."""
    if config.method == "full":
        for p in model.parameters():
            p.requires_grad = True
        return model, None, None
    if config.method == "hft":
        return model, None, HftInfo(**hft.apply(model, config.seed, config.hft_stage))
    return _lora(model, config)


def _lora(model: Any, config: FinetuneConfig) -> tuple[Any, LoraInfo, None]:
    from peft import LoraConfig, get_peft_model

    targets = config.target_modules or "all-linear"  # peft leaves the LM head out of all-linear
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.lora_alpha,
        use_rslora=config.rslora,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora_config)
    except ValueError as exc:  # peft's message names the modules it could not find
        raise EvalkitError(f"cannot apply LoRA: {exc}") from None
    scale = math.sqrt(config.rank) if config.rslora else config.rank
    info = LoraInfo(rank=config.rank, alpha=config.lora_alpha, rslora=config.rslora,
                    scaling=config.lora_alpha / scale, dropout=config.lora_dropout,
                    target_modules=_leaf_names(model.peft_config["default"].target_modules))
    return model, info, None


def _leaf_names(targets: Any) -> list[str] | str:
    """peft expands "all-linear" to full module paths; the manifest lists the kinds."""
    if isinstance(targets, str):
        return targets
    return sorted({t.rsplit(".", 1)[-1] for t in targets})


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; ``parameters()`` already counts tied weights once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
