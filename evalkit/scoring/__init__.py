"""Scorers: turn one completion into per-sample scores. Registered by name for task YAML."""

from __future__ import annotations

from evalkit.errors import EvalkitError
from evalkit.scoring.base import (
    SCORERS,
    Metric,
    Score,
    ScoreInput,
    Scorer,
    register_scorer,
)

__all__ = ["SCORERS", "Metric", "Score", "ScoreInput", "Scorer", "make_scorer",
           "register_scorer"]


def make_scorer(name: str, config: dict) -> Scorer:
    _load_builtin_scorers()
    if name not in SCORERS:
        raise EvalkitError(f"unknown scorer '{name}' (known: {', '.join(sorted(SCORERS))})")
    return SCORERS[name](config)


def _load_builtin_scorers() -> None:
    import evalkit.scoring.code
    import evalkit.scoring.critique
    import evalkit.scoring.finetunebench
    import evalkit.scoring.loglikelihood  # noqa: F401  (the probes' scorers register)
    from evalkit.scoring import exact_match  # noqa: F401  (registers)
