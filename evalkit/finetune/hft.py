"""Half Fine-Tuning (HFT, Hui et al. 2024, arXiv:2404.18466): train a random half of each
transformer block, freeze the rest, so the frozen half keeps what the model knew.

Selection is at the category level inside every block, as in the paper:

- attention: 2 of the 4 projections (q/k/v/o) train;
- MLP: half of the projections train. Three projections (gate/up/down) do not halve, so the
  paper's rounding is used: a random half of the blocks train 2 of 3, the other half 1 of 3
  (with an odd number of blocks one coin flip decides the spare block). Across the model exactly
  half of the MLP matrices train (± one);
- norms inside a block (input / post-attention, and q/k norms where a model has them): half,
  with the same rounding.

Outside the blocks evalkit freezes everything: token embeddings, the final norm and the LM head
(tied to the embeddings in many small models). The paper's selection is about the blocks; freezing
the vocabulary matrices keeps the tokenizer-facing weights identical to the base. The policy is
written into the manifest with the exact per-block selection.

The draw uses ``random.Random`` seeded by (seed, stage): the same seed gives the same half; a
new ``stage`` (a later fine-tuning stage of the same model) draws a new half, as the paper does
per stage.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Any

from evalkit.errors import EvalkitError

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")

POLICY = {
    "attention": "2 of 4 projections (q/k/v/o) per block, drawn at random",
    "mlp": "half of gate/up/down per block: 2 of 3 in a random half of the blocks, 1 of 3 in "
           "the others",
    "block_norms": "half of the norms in each block (1 of input/post-attention), drawn at random",
    "embeddings": "frozen",
    "final_norm": "frozen",
    "lm_head": "frozen",
}

# "model.layers.3.self_attn.q_proj.weight" → block "model.layers.3", module "self_attn.q_proj"
_BLOCK = re.compile(r"^(?P<block>.*?\.(?:layers|h|blocks)\.(?P<index>\d+))\.(?P<module>.+)\.[^.]+$")


def categorize(module: str) -> str | None:
    leaf = module.rsplit(".", 1)[-1]
    if leaf in ATTENTION:
        return "attention"
    if leaf in MLP:
        return "mlp"
    if "norm" in leaf:
        return "norm"
    return None


def blocks_of(param_names: list[str]) -> dict[str, dict[str, list[str]]]:
    """{block: {category: [module, ...]}} in model order."""
    blocks: dict[str, dict[str, list[str]]] = {}
    order: dict[str, int] = {}
    for name in param_names:
        m = _BLOCK.match(name)
        if not m or (category := categorize(m["module"])) is None:
            continue
        order[m["block"]] = int(m["index"])
        modules = blocks.setdefault(m["block"], defaultdict(list))[category]
        if m["module"] not in modules:
            modules.append(m["module"])
    return {b: dict(blocks[b]) for b in sorted(blocks, key=order.__getitem__)}


def select(param_names: list[str], seed: int, stage: int = 0) -> dict[str, list[str]]:
    """The modules that train, per block: {block: [module, ...]} (module relative to block)."""
    blocks = blocks_of(param_names)
    if not blocks or any(len(c.get("attention", [])) != len(ATTENTION) for c in blocks.values()):
        raise EvalkitError(
            "HFT needs transformer blocks with separate q/k/v/o projections (Llama-style module "
            "names such as model.layers.N.self_attn.q_proj); this model has none"
        )
    rng = random.Random(f"evalkit-hft:{seed}:{stage}")
    sizes: dict[str, list[int]] = {}  # category → how many modules train in each block
    for category in ("attention", "mlp", "norm"):
        counts = [len(c.get(category, [])) for c in blocks.values()]
        sizes[category] = _half_counts(counts, rng)
    selection = {}
    for i, (block, categories) in enumerate(blocks.items()):
        chosen = []
        for category in ("attention", "mlp", "norm"):
            modules = categories.get(category, [])
            chosen += rng.sample(modules, sizes[category][i])
        selection[block] = sorted(chosen)
    return selection


def _half_counts(counts: list[int], rng: random.Random) -> list[int]:
    """How many of n modules train in each block: n/2, or for odd n floor/ceil so that a random
    half of the blocks round up (the paper's rule for the 3 MLP matrices)."""
    rounding_up = list(range(len(counts)))
    rng.shuffle(rounding_up)
    up = set(rounding_up[: len(counts) // 2 + (rng.random() < 0.5 if len(counts) % 2 else 0)])
    return [n // 2 + (n % 2 and i in up) for i, n in enumerate(counts)]


def apply(model: Any, seed: int, stage: int = 0) -> dict:
    """Freeze everything, unfreeze the selected half; return what the manifest records."""
    names = [n for n, _ in model.named_parameters()]
    selection = select(names, seed, stage)
    trained = {f"{block}.{module}." for block, modules in selection.items() for module in modules}
    in_blocks = total_in_blocks = trainable = 0
    for name, param in model.named_parameters():
        param.requires_grad = any(name.startswith(prefix) for prefix in trained)
        trainable += param.numel() if param.requires_grad else 0
        if _BLOCK.match(name):
            total_in_blocks += param.numel()
            in_blocks += param.numel() if param.requires_grad else 0
    return {
        "seed": seed,
        "stage": stage,
        "policy": POLICY,
        "selection": selection,
        "trainable_params": trainable,
        "block_params": total_in_blocks,
        "trainable_fraction_of_blocks": round(in_blocks / max(total_in_blocks, 1), 4),
    }
