"""Which examples go into which optimizer step, and how a micro-batch becomes tensors.

The whole schedule is computed up front from the seed, identically in every process, so a
resumed run simply starts at step N of the same plan and every process knows how many target
tokens the step holds in total (the loss is averaged over those).

Batches are length-grouped: each epoch's shuffled order is cut into windows of 32 batches,
sorted by length inside a window, cut into batches, and the batches shuffled again. Similar
lengths share a batch, so little compute goes to padding, while every epoch still sees a fresh
random order. Padding is on the left, so every sequence ends at the last column and the logits
are computed only over the tail of the batch that holds target tokens (the LM head over a 49k
vocabulary is a large part of the cost of a small model).
"""

from __future__ import annotations

import random
from typing import Any

from evalkit.finetune.data import IGNORE, Tokenized

GROUP_WINDOW = 32  # batches per length-sorting window

Step = list[list[int]]  # micro-batches of example indices, grad_accum × processes of them


def plan(lengths: list[int], *, epochs: int, batch_size: int, grad_accum: int, processes: int,
         seed: int, group_by_length: bool = True) -> list[Step]:
    """Every optimizer step of the run, in order."""
    steps = []
    for epoch in range(epochs):
        rng = random.Random(f"evalkit-data:{seed}:{epoch}")
        batches = _epoch_batches(lengths, batch_size, rng, group_by_length)
        steps += _into_steps(batches, grad_accum * processes)
    return steps


def _epoch_batches(lengths: list[int], batch_size: int, rng: random.Random,
                   group_by_length: bool) -> list[list[int]]:
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * GROUP_WINDOW
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _into_steps(batches: list[list[int]], per_step: int) -> list[Step]:
    """Group micro-batches into optimizer steps of exactly ``per_step`` micro-batches.

    A short last step is re-split into ``per_step`` smaller micro-batches so every process does
    the same number of forward passes per step; if it has fewer examples than that (fewer than
    grad_accum × processes), they sit out this epoch.
    """
    steps = [batches[i:i + per_step] for i in range(0, len(batches), per_step)]
    if steps and len(steps[-1]) < per_step:
        rest = [i for batch in steps.pop() for i in batch]
        if len(rest) >= per_step:
            steps.append([rest[k::per_step] for k in range(per_step)])
    return steps


def collate(examples: list[Tokenized], pad_id: int) -> dict[str, Any]:
    """Left-padded tensors plus ``logits_to_keep``: how many final positions need logits."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    first_target = width
    for row, e in enumerate(examples):
        start = width - len(e.input_ids)
        input_ids[row, start:] = torch.tensor(e.input_ids)
        labels[row, start:] = torch.tensor(e.labels)
        attention_mask[row, start:] = 1
        first_target = min(first_target, start + _first_target(e.labels))
    # The logit at position t predicts token t+1: targets from `first_target` on need the logits
    # from `first_target - 1` on.
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "labels": labels,
        "logits_to_keep": width - first_target + 1,
        "tokens": int(attention_mask.sum()),
    }


def _first_target(labels: list[int]) -> int:
    return next(i for i, label in enumerate(labels) if label != IGNORE)
