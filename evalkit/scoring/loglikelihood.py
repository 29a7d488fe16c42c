"""Scorers for loglikelihood tasks (lm-eval's ``multiple_choice`` and ``loglikelihood_rolling``)
and the summary metrics that are not means of per-item values.

- ``multiple_choice``: ``acc`` = the choice with the highest summed logprob is the gold one;
  ``acc_norm`` = the same after dividing by the choice's length in characters (lm-eval's).
- ``perplexity``: lm-eval's wikitext metrics over the whole corpus (``word_perplexity``,
  ``byte_perplexity``, ``bits_per_byte``: sums of logprobs over sums of words / bytes, counted
  on ``count_field``, the original text), plus ``bits_per_byte,doc_mean``: one bits-per-byte
  value per document, the per-item number that ``compare`` pairs.

Summary metrics carry an aggregation other than "mean"/"pass@k" ("corpus", "group", "macro"):
they are reported in metrics.json and left out of paired comparisons, whose rows come from the
per-item metrics they summarize.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from evalkit.errors import EvalkitError
from evalkit.scoring.base import Metric, Score, ScoreInput, Scorer, register_scorer


@dataclass
class LoglikelihoodInput:
    doc: dict
    continuations: list[str]  # what was scored, one per choice (rolling: the text)
    results: list[Any]  # evalkit.models.base.Loglikelihood, one per continuation
    choices: list[str] | None = None  # multiple choice: the options without the delimiter
    gold: int | None = None


class LoglikelihoodScorer(Scorer):
    """Scores loglikelihoods instead of a completion."""

    def __call__(self, item: ScoreInput) -> Score:
        raise EvalkitError("this scorer scores loglikelihood tasks; set output_type to "
                           "multiple_choice or loglikelihood_rolling in the task file")

    def score_loglikelihood(self, item: LoglikelihoodInput) -> Score:
        raise NotImplementedError

    def summary_metrics(self, samples: list[dict]) -> dict[str, dict]:
        return {}


class MultipleChoiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metrics: tuple[str, ...] = ("acc",)


class MultipleChoice(LoglikelihoodScorer):
    def __init__(self, config: MultipleChoiceConfig):
        unknown = set(config.metrics) - {"acc", "acc_norm"}
        if unknown:
            raise EvalkitError(f"multiple_choice scorer: unknown metric(s) {sorted(unknown)} "
                               "(known: acc, acc_norm)")
        self.config = config

    def score_loglikelihood(self, item: LoglikelihoodInput) -> Score:
        choices = item.choices or []
        lls = np.array([r.logprob for r in item.results])
        # np.argmax takes the first of tied choices, as lm-eval does.
        picks = {"acc": int(np.argmax(lls)),
                 "acc_norm": int(np.argmax(lls / np.array([float(len(c)) for c in choices])))}
        return Score(values={m: float(picks[m] == item.gold) for m in self.config.metrics},
                     extracted={m: choices[picks[m]] for m in self.config.metrics},
                     target=choices[item.gold])

    def metrics(self, n_samples: int) -> list[Metric]:
        return [Metric(name=m, score_key=m) for m in self.config.metrics]


class PerplexityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count_field: str | None = None  # doc field whose words/bytes normalize (default: the text)


class Perplexity(LoglikelihoodScorer):
    def __init__(self, config: PerplexityConfig):
        self.config = config

    def score_loglikelihood(self, item: LoglikelihoodInput) -> Score:
        text = item.continuations[0]
        if self.config.count_field:
            if self.config.count_field not in item.doc:
                raise EvalkitError(f"perplexity scorer: count_field '{self.config.count_field}' "
                                   "is not a field of the data")
            text = str(item.doc[self.config.count_field])
        logprob = sum(r.logprob for r in item.results)
        words, n_bytes = word_count(text), len(text.encode("utf-8"))
        return Score(values={"bits_per_byte,doc_mean": -logprob / n_bytes / math.log(2),
                             "logprob": logprob, "words": float(words), "bytes": float(n_bytes)},
                     target=None)

    def metrics(self, n_samples: int) -> list[Metric]:
        return [Metric(name="bits_per_byte,doc_mean", score_key="bits_per_byte,doc_mean",
                       higher_is_better=False)]

    def summary_metrics(self, samples: list[dict]) -> dict[str, dict]:
        return corpus_perplexity([s["scores"] for s in samples])


def word_count(text: str) -> int:
    """lm-eval's wikitext word count: pieces of ``re.split(r"\\s+", text)``."""
    return len(re.split(r"\s+", text))


def corpus_perplexity(scores: Sequence[dict]) -> dict[str, dict]:
    """lm-eval's ``weighted_perplexity`` and ``bits_per_byte`` over all documents."""
    logprob = sum(s["logprob"] for s in scores)
    words = sum(s["words"] for s in scores)
    n_bytes = sum(s["bytes"] for s in scores)
    if not scores or not words or not n_bytes:
        return {}
    values = {"word_perplexity": math.exp(-logprob / words),
              "byte_perplexity": math.exp(-logprob / n_bytes),
              "bits_per_byte": -logprob / n_bytes / math.log(2)}
    return {name: summary(value, len(scores), "corpus", "logprob", higher_is_better=False)
            for name, value in values.items()}


def group_metrics(metrics: dict[str, dict], samples: Sequence[dict],
                  group_of: Callable[[str], str]) -> dict[str, dict]:
    """Per-group values of every "mean" metric (``<metric>,<group>``) and their unweighted
    mean over groups (``<metric>,macro``); the plain metric is the mean over all items
    (lm-eval's group score with ``weight_by_size``)."""
    out: dict[str, dict] = {}
    for name, m in metrics.items():
        if m["aggregation"] != "mean":
            continue
        per_doc: dict[str, list[float]] = defaultdict(list)
        for s in samples:
            if s["scores"].get(m["score_key"]) is not None:
                per_doc[s["doc_id"]].append(float(s["scores"][m["score_key"]]))
        groups: dict[str, list[float]] = defaultdict(list)
        for doc, values in per_doc.items():
            groups[group_of(doc)].append(float(np.mean(values)))
        stats = {}
        for g in sorted(groups):
            v = np.array(groups[g])
            se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
            stats[g] = (float(v.mean()), se, len(v))
            out[f"{name},{g}"] = summary(
                stats[g][0], len(v), "group", m["score_key"], m["higher_is_better"], stderr=se,
                stderr_note=None if se is not None else "one item in the group: no spread")
        if len(stats) > 1:
            values = np.array([v for v, _, _ in stats.values()])
            ses = [se for _, se, _ in stats.values()]
            known = all(se is not None for se in ses)
            out[f"{name},macro"] = summary(
                float(values.mean()), sum(n for _, _, n in stats.values()), "macro",
                m["score_key"], m["higher_is_better"],
                stderr=float(np.sqrt(np.sum(np.square(ses)))) / len(ses) if known else None,
                stderr_note=None if known else "a group has one item: no standard error")
    return out


def summary(value: float, n: int, aggregation: str, score_key: str,
            higher_is_better: bool = True, stderr: float | None = None,
            stderr_note: str | None = None) -> dict:
    """A metrics.json entry for a summary metric (``aggregation``: corpus, group or macro).

    metrics.json is standard JSON: a standard error that does not exist is ``null``, with the
    reason in ``stderr_note`` (a corpus-level number has no per-item spread).
    """
    entry = {"value": value, "stderr": stderr, "n": n, "aggregation": aggregation,
             "score_key": score_key, "k": None, "higher_is_better": higher_is_better}
    if stderr is None:
        entry["stderr_note"] = stderr_note or f"{aggregation} metric: no per-item standard error"
    return entry


@register_scorer("multiple_choice")
def multiple_choice(config: dict) -> Scorer:
    return MultipleChoice(MultipleChoiceConfig(**config))


@register_scorer("perplexity")
def perplexity(config: dict) -> Scorer:
    return Perplexity(PerplexityConfig(**config))
