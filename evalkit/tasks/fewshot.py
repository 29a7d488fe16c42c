"""Few-shot example selection, reproducing lm-evaluation-harness's samplers.

lm-eval's default sampler is ONE ``random.Random(seed)`` per task, and each evaluated doc, in
order, draws ``rnd.sample(pool, n)`` (``n + 1`` minus the doc itself when shots come from the
eval split). So the shots of doc i depend on every draw before it: we replay the draws for the
whole split up front, which makes a doc's prompt independent of ``--limit`` and of resuming.
"""

from __future__ import annotations

import random


def sample_shots(pool: list[dict], eval_docs: list[dict], n: int, *, sampler: str, seed: int,
                 same_split: bool) -> list[list[dict]]:
    """The shots for every eval doc, in eval-doc order."""
    if n == 0:
        return [[] for _ in eval_docs]
    if sampler == "first_n":
        return [[d for d in pool if d != doc][:n] if same_split else pool[:n]
                for doc in eval_docs]
    if sampler != "random":
        raise ValueError(f"unknown few-shot sampler {sampler}")
    rnd = random.Random(seed)
    shots = []
    for doc in eval_docs:
        if not same_split:
            shots.append(rnd.sample(pool, n))
            continue
        picked = [d for d in rnd.sample(pool, n + 1) if d != doc][:n]
        if len(picked) < n:  # the pool held duplicates of doc: lm-eval resamples without them
            picked = rnd.sample([d for d in pool if d != doc], n)
        shots.append(picked)
    return shots
