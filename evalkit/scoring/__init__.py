"""Scorers: turn one completion into per-sample scores. A task file names its scorer: a
builtin's name, ``module:function`` (a factory, the module next to the task file or importable),
or the name of an installed entry point in group ``evalkit.scorers`` (docs/tasks.md)."""

from __future__ import annotations

from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.plugins import SCORERS_GROUP, entry_point_names, import_ref, load_entry_point
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


def make_scorer(name: str, config: dict, near: Path | None = None) -> Scorer:
    """The scorer ``name`` built from its config; ``near`` is the task file naming it."""
    _load_builtin_scorers()
    if ":" in name:
        factory = import_ref(name, near)
    elif name in SCORERS:
        factory = SCORERS[name]
    else:
        factory = load_entry_point(SCORERS_GROUP, name)
        if factory is None:
            known = sorted({*SCORERS, *entry_point_names(SCORERS_GROUP)})
            raise EvalkitError(f"unknown scorer '{name}' (known: {', '.join(known)}; or "
                               "module:function)")
    scorer = factory(config)
    if not isinstance(scorer, Scorer):
        raise EvalkitError(f"scorer '{name}' gave a {type(scorer).__name__}, not an "
                           "evalkit.scoring.Scorer")
    return scorer


def _load_builtin_scorers() -> None:
    import evalkit.scoring.code
    import evalkit.scoring.critique
    import evalkit.scoring.finetunebench
    import evalkit.scoring.loglikelihood  # noqa: F401  (the probes' scorers register)
    from evalkit.scoring import exact_match  # noqa: F401  (registers)
