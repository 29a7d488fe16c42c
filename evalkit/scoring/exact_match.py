"""Exact match after regex extraction: lm-eval's ``regex``+``take_first`` filters and its
``exact_match`` metric with ``regexes_to_ignore`` / ``ignore_case`` / ``ignore_punctuation``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from evalkit.scoring.base import Metric, Score, ScoreInput, Scorer, register_scorer
from evalkit.scoring.extract import normalize, regex_extract


class RegexFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    regex: str
    group_select: int = 0


class ExactMatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filters: dict[str, RegexFilter] = {}  # filter name -> regex; none = the raw completion
    regexes_to_ignore: tuple[str, ...] = ()
    ignore_case: bool = False
    ignore_punctuation: bool = False


class ExactMatch(Scorer):
    def __init__(self, config: ExactMatchConfig):
        self.config = config

    def _norm(self, text: str) -> str:
        c = self.config
        return normalize(text, c.regexes_to_ignore, c.ignore_case, c.ignore_punctuation)

    def __call__(self, item: ScoreInput) -> Score:
        extracted = {name: regex_extract(item.completion, f.regex, f.group_select)
                     for name, f in self.config.filters.items()} or {"none": item.completion}
        gold = self._norm(item.target)
        return Score(
            values={f"exact_match,{name}": float(self._norm(pred) == gold)
                    for name, pred in extracted.items()},
            extracted=extracted,
            target=gold,
        )

    def metrics(self, n_samples: int) -> list[Metric]:
        names = list(self.config.filters) or ["none"]
        return [Metric(name=f"exact_match,{n}", score_key=f"exact_match,{n}") for n in names]


@register_scorer("exact_match")
def exact_match(config: dict) -> Scorer:
    return ExactMatch(ExactMatchConfig(**config))
