"""comparison.json and baseline files: the pydantic models they are written from and read
with (``Comparison``, ``Baseline``), and the per-item scores a pair is made of (``TaskScores``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from evalkit import __version__
from evalkit import stats as st

SCHEMA_VERSION = 1
PER_ITEM_AGGREGATIONS = ("mean", "pass@k")
# Summaries of per-item metrics (corpus perplexity, per-group and macro scores): reported by
# runs, never paired; the per-item metrics they summarize are.
SUMMARY_AGGREGATIONS = ("corpus", "group", "macro")
Verdict = Literal["improved", "regressed", "no significant change", "untested"]
TestName = Literal["mcnemar-exact", "permutation", "wilcoxon", "none"]
_Str = Annotated[str, BeforeValidator(lambda v: v if v is None else str(v))]


class CheckpointRef(BaseModel):
    """Which checkpoint produced a run (copied from run.json)."""

    model_config = ConfigDict(extra="ignore")
    spec: str | None = None
    name: str | None = None
    kind: str | None = None
    fingerprint: str | None = None
    base_fingerprint: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.spec or (self.fingerprint or "?")[:12]


class MetricScores(BaseModel):
    """One metric of one run as per-item values (aligned with ``TaskScores.doc_ids``).

    ``None`` marks an item that could not be scored (e.g. every sample hit a sandbox error);
    such an item is left out of that metric's paired analysis on both sides.
    """

    aggregation: Literal["mean", "pass@k"]
    score_key: str
    k: int | None = None
    higher_is_better: bool = True
    values: list[float | None]


class TaskScores(BaseModel):
    """Everything needed to pair a run with another one, without its completions."""

    task: str
    version: _Str
    generation: dict[str, Any]
    checkpoint: CheckpointRef = Field(default_factory=CheckpointRef)
    run_key: str | None = None
    source: str | None = None
    prompt_template_hash: str | None = None
    chat_template_hash: str | None = None
    doc_ids: list[str]
    prompt_hashes: list[str]
    metrics: dict[str, MetricScores]

    @model_validator(mode="after")
    def _aligned(self) -> TaskScores:
        n = len(self.doc_ids)
        if len(set(self.doc_ids)) != n:
            raise ValueError(f"task {self.task}: duplicate doc_ids")
        if len(self.prompt_hashes) != n:
            raise ValueError(f"task {self.task}: {len(self.prompt_hashes)} prompt_hashes "
                             f"for {n} doc_ids")
        for name, metric in self.metrics.items():
            if len(metric.values) != n:
                raise ValueError(f"task {self.task}: metric {name} has {len(metric.values)} "
                                 f"values for {n} doc_ids")
        return self


class Baseline(BaseModel):
    """``results/baseline-*.json``: a stored reference for ``evalkit check``."""

    schema_version: Literal[1] = 1
    kind: Literal["evalkit.baseline"] = "evalkit.baseline"
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    evalkit_version: str = __version__
    tasks: list[TaskScores]


class SampleView(BaseModel):
    """One side of a flipped item: the sample a reader should look at."""

    sample_idx: int
    completion: str
    extracted: dict[str, Any] | None = None
    scores: dict[str, Any] = Field(default_factory=dict)
    execution_status: str | None = None
    finish_reason: str | None = None
    n_samples: int = 1


class FlippedItem(BaseModel):
    """An item whose outcome changed, with both completions side by side."""

    doc_id: str
    target: Any = None
    prompt: str | None = None
    flips: dict[str, Literal["regression", "improvement"]]  # metric -> direction
    values: dict[str, tuple[float, float]]  # metric -> (base, tuned) per-item value
    base: SampleView | None = None  # None when that side has no stored samples (baseline file)
    tuned: SampleView | None = None


class MetricRow(BaseModel):
    """One task x metric: the numbers, the test, the verdict and the flipped items."""

    task: str
    metric: str
    aggregation: Literal["mean", "pass@k"]
    k: int | None = None
    higher_is_better: bool = True
    n_items: int
    n_excluded: int = 0
    base: float | None
    tuned: float | None
    delta: float | None
    base_stderr: float | None = None
    tuned_stderr: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    test: TestName = "none"
    p_value: float | None = None
    p_holm: float | None = None
    verdict: Verdict = "untested"
    b: int | None = None  # binary only: items where base was right and tuned wrong
    c: int | None = None  # binary only: items where tuned was right and base wrong
    regressions: list[str] = Field(default_factory=list)  # doc ids, worst first
    improvements: list[str] = Field(default_factory=list)  # doc ids, best first


class ComparisonSettings(BaseModel):
    alpha: float = 0.05
    confidence: float = 0.95
    resamples: int = st.DEFAULT_RESAMPLES
    seed: int = 0
    correction: Literal["holm"] = "holm"
    correction_scope: Literal["all rows"] = "all rows"
    # str, not a Literal: comparison.json files written before Newcombe's interval still load.
    ci_method: str = ("Newcombe (1998) method 10 for 0/1 items, else paired expanded "
                      "percentile bootstrap over items (Hesterberg 2015), none when too few items "
                      "changed for a sign test to reach the level")
    binary_test: Literal["mcnemar-exact"] = "mcnemar-exact"
    continuous_test: st.ContinuousTest = "permutation"


class TaskPair(BaseModel):
    task: str
    base: TaskScores
    tuned: TaskScores
    flipped: list[FlippedItem] = Field(default_factory=list)


class RecoveryRow(BaseModel):
    """One (plain task, conjugate task, metric): forgetting, recovery and their verdict."""

    plain: str  # task names
    conjugate: str
    metric: str
    n_items: int
    forgetting: float  # mean(base - tuned) on the plain prompt, in the metric's good direction
    conjugate_loss: float  # the same on the conjugate prompt
    recovery: float  # forgetting - conjugate_loss, item-paired
    recovery_ci: tuple[float, float]
    recovered_share: float | None  # recovery / forgetting, when forgetting > 0
    recovered_share_ci: tuple[float, float] | None = None
    p_value: float
    plain_verdict: str  # the plain task's compare row
    verdict: Literal["no significant forgetting", "suppressed", "forgotten"]


class Comparison(BaseModel):
    """``comparison.json``."""

    schema_version: Literal[1] = 1
    kind: Literal["evalkit.comparison"] = "evalkit.comparison"
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    evalkit_version: str = __version__
    base_label: str
    tuned_label: str
    settings: ComparisonSettings
    rows: list[MetricRow]
    tasks: list[TaskPair]
    notes: list[str] = Field(default_factory=list)
    # Conjugate-prompt recovery (evalkit.compare.recovery), one per (plain task, conjugate task,
    # metric) present in the comparison.
    recovery: list[RecoveryRow] = Field(default_factory=list)
    # `compare --tuco`: per task, TuCo over its prompts (mean, std, median, n), from
    # evalkit.analysis.tuco; empty when not asked for.
    tuco: dict[str, dict[str, float]] = Field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(("improved", "regressed", "no significant change", "untested"), 0)
        for row in self.rows:
            counts[row.verdict] += 1
        return counts
