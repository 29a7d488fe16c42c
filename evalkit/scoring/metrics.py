"""Aggregate per-sample scores into reported metrics with item-clustered standard errors."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from evalkit.scoring.base import Metric


def per_item_values(samples: Iterable[dict], metric: Metric) -> dict[str, float]:
    """One value per doc: the mean over its samples, or the unbiased pass@k estimate."""
    by_doc: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        if metric.score_key in s["scores"]:
            by_doc[s["doc_id"]].append(float(s["scores"][metric.score_key]))
    if metric.aggregation == "mean":
        return {d: float(np.mean(v)) for d, v in by_doc.items()}
    if metric.aggregation == "pass@k":
        from evalkit.stats import pass_at_k

        for d, v in by_doc.items():
            if any(x not in (0.0, 1.0) for x in v):
                raise ValueError(f"doc '{d}': pass@k needs 0/1 scores under "
                                 f"'{metric.score_key}'")
        return {d: pass_at_k(len(v), int(sum(v)), metric.k) for d, v in by_doc.items()
                if len(v) >= metric.k}
    raise ValueError(f"unknown aggregation {metric.aggregation}")


def aggregate(samples: list[dict], metrics: list[Metric]) -> dict[str, dict]:
    """metrics.json's ``metrics`` mapping: value, stderr (sd of per-item values / √n), n."""
    out = {}
    for m in metrics:
        values = np.array(list(per_item_values(samples, m).values()), dtype=float)
        n = len(values)
        out[m.name] = {
            # None, not NaN: metrics.json must stay standard JSON.
            "value": float(values.mean()) if n else None,
            "stderr": float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
            "n": n,
            "aggregation": m.aggregation,
            "score_key": m.score_key,
            "k": m.k,
            "higher_is_better": m.higher_is_better,
        }
    return out
