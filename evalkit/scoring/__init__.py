"""Scorers: turn one completion into per-sample scores. Registered by name for task YAML."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import EvalkitError


@dataclass
class Score:
    values: dict[str, float]  # score key -> per-sample value
    extracted: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    execution: dict | None = None


@dataclass(frozen=True)
class Metric:
    """How a score key aggregates into a reported metric (see docs/run-format.md)."""

    name: str
    score_key: str
    aggregation: str = "mean"  # "mean" | "pass@k"
    k: int | None = None
    higher_is_better: bool = True


@dataclass
class ScoreInput:
    doc: dict
    prompt: str
    completion: str
    target: str
    sandbox: Any = None  # an evalkit.sandbox sandbox when the scorer needs one


class Scorer:
    """Subclasses set ``needs_sandbox``, implement ``__call__`` and ``metrics``."""

    needs_sandbox = False

    def __call__(self, item: ScoreInput) -> Score:
        raise NotImplementedError

    def metrics(self, n_samples: int) -> list[Metric]:
        raise NotImplementedError


SCORERS: dict[str, Callable[[dict], Scorer]] = {}


def register_scorer(name: str):
    """Register a scorer factory: ``factory(config_dict) -> Scorer``."""

    def deco(factory):
        SCORERS[name] = factory
        return factory

    return deco


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
