"""What a scorer is: its input, its per-sample score, the metrics it reports, and the
registry scorers add themselves to (``@register_scorer``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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
