"""Paired comparison of two runs of the same task: load, validate, pair, test, render.

A comparison reads finished run folders (see ``docs/run-format.md``), pairs the BASE and TUNED
samples by ``(doc_id, sample_idx)``, and for every metric in ``metrics.json`` reduces each side
to one value per item (the mean over the item's samples, or the unbiased pass@k). Everything
statistical then happens on those paired per-item values (see ``evalkit.stats``):

- Δ = mean(tuned) - mean(base) over the items both sides could score;
- a CI of Δ: Newcombe's (1998) paired score interval when every per-item value is 0/1, else a
  expanded percentile bootstrap that resamples items (seeded, 10,000 resamples by default);
- McNemar's exact test when every per-item value is 0/1, else a sign-flip permutation test of
  the mean difference (or Wilcoxon on request);
- Holm's correction over **all rows of the comparison** (every task x metric that has a test):
  the family is "everything this comparison claims", so asking about more tasks or metrics can
  never make a false "regressed" more likely. Holm is valid under any dependence, which matters
  because e.g. GSM8K strict-match and flexible-extract rows are strongly correlated;
- verdict per row: ``improved`` / ``regressed`` when the Holm-adjusted p <= alpha (direction from
  the sign of Δ and the metric's ``higher_is_better``), else ``no significant change``; a row with
  no scorable item is ``untested``.

Runs are refused (``EvalkitError``) when they are unfinished, or not pairable: different task or
task version, different generation settings, different item sets, or different prompts.

The same per-item representation (``TaskScores``) is what a baseline file stores, so a
comparison can be made against a committed baseline without the original run folder.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from evalkit import __version__
from evalkit import stats as st
from evalkit.errors import EvalkitError

SCHEMA_VERSION = 1
PER_ITEM_AGGREGATIONS = ("mean", "pass@k")
# Summaries of per-item metrics (corpus perplexity, per-group and macro scores): reported by
# runs, never paired; the per-item metrics they summarize are.
SUMMARY_AGGREGATIONS = ("corpus", "group", "macro")
Verdict = Literal["improved", "regressed", "no significant change", "untested"]
TestName = Literal["mcnemar-exact", "permutation", "wilcoxon", "none"]
_Str = Annotated[str, BeforeValidator(lambda v: v if v is None else str(v))]


# --------------------------------------------------------------------------------------------
# Schemas (comparison.json and baseline files are written from these models)
# --------------------------------------------------------------------------------------------


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

    schema_version: Literal[1] = SCHEMA_VERSION
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
                      "percentile bootstrap over items (Hesterberg 2015)")
    binary_test: Literal["mcnemar-exact"] = "mcnemar-exact"
    continuous_test: st.ContinuousTest = "permutation"


class TaskPair(BaseModel):
    task: str
    base: TaskScores
    tuned: TaskScores
    flipped: list[FlippedItem] = Field(default_factory=list)


class Comparison(BaseModel):
    """``comparison.json``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["evalkit.comparison"] = "evalkit.comparison"
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    evalkit_version: str = __version__
    base_label: str
    tuned_label: str
    settings: ComparisonSettings
    rows: list[MetricRow]
    tasks: list[TaskPair]
    notes: list[str] = Field(default_factory=list)
    # Conjugate-prompt recovery (evalkit.conjugate.RecoveryRow as dicts), one per (plain task,
    # conjugate task, metric) present in the comparison.
    recovery: list[dict[str, Any]] = Field(default_factory=list)
    # `compare --tuco`: per task, TuCo over its prompts (mean, std, median, n), from
    # evalkit.analysis.tuco; empty when not asked for.
    tuco: dict[str, dict[str, float]] = Field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(("improved", "regressed", "no significant change", "untested"), 0)
        for row in self.rows:
            counts[row.verdict] += 1
        return counts


# --------------------------------------------------------------------------------------------
# Loading run folders, baselines and comparisons
# --------------------------------------------------------------------------------------------


class _RunTask(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    version: _Str
    prompt_template_hash: str | None = None
    chat_template_hash: str | None = None


class _RunJson(BaseModel):
    model_config = ConfigDict(extra="ignore")
    schema_version: int
    status: str
    run_key: str | None = None
    task: _RunTask
    checkpoint: CheckpointRef = Field(default_factory=CheckpointRef)
    generation: dict[str, Any]


class _MetricSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")
    aggregation: str
    score_key: str
    k: int | None = None
    higher_is_better: bool = True


class _MetricsJson(BaseModel):
    model_config = ConfigDict(extra="ignore")
    schema_version: int
    task: str
    metrics: dict[str, _MetricSpec]


@dataclass
class RunData:
    """A loaded run: its per-item scores and, for run folders, the samples themselves."""

    scores: TaskScores
    samples: dict[str, dict[int, dict[str, Any]]] | None = None  # doc_id -> sample_idx -> record
    notes: tuple[str, ...] = ()

    @property
    def task(self) -> str:
        return self.scores.task


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "top level"
    return f"{loc}: {err['msg']}"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalkitError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalkitError(f"{path} is not valid JSON ({exc})") from None


def _natural_key(text: str) -> tuple[Any, ...]:
    # "HumanEval/2" < "HumanEval/10", and numeric GSM8K ids sort as numbers.
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def _read_samples(path: Path) -> dict[str, dict[int, dict[str, Any]]]:
    samples: dict[str, dict[int, dict[str, Any]]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalkitError(f"{path} is missing; the run folder is incomplete") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"{path} cannot be read as UTF-8 text ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            doc_id, idx = str(record["doc_id"]), int(record["sample_idx"])
            if not isinstance(record.get("scores"), dict) or "prompt_hash" not in record:
                raise KeyError("scores/prompt_hash")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EvalkitError(f"{path}:{number} is not a valid sample record ({exc})") from None
        # A resumed writer may append a sample twice; like store.repair_samples, the first wins.
        samples.setdefault(doc_id, {}).setdefault(idx, record)
    return samples


def _item_value(records: Iterable[dict[str, Any]], metric: _MetricSpec, where: str
                ) -> float | None:
    raw = [r["scores"].get(metric.score_key) for r in records]
    scores = [_score(s, metric.score_key, where) for s in raw if s is not None]  # None = unscorable
    if not scores:
        return None
    if metric.aggregation == "mean":
        return float(np.mean(scores))
    if any(s not in (0.0, 1.0) for s in scores):
        raise EvalkitError(f"{where}: pass@k needs 0/1 scores under '{metric.score_key}'")
    k = metric.k or 1
    if len(scores) < k:
        return None
    return st.pass_at_k(len(scores), int(sum(scores)), k)


def _score(value: Any, key: str, where: str) -> float:
    # A score must be a finite number: "n/a", a list or NaN would otherwise crash (or poison)
    # the statistics far from the file that holds it.
    if not isinstance(value, int | float) or not np.isfinite(value):
        raise EvalkitError(f"{where}: score '{key}' is {json.dumps(value)[:40]}, not a finite "
                           "number")
    return float(value)


def load_run(path: str | Path) -> RunData:
    """Load a finished run folder; refuse a run that is still running or was killed."""
    folder = Path(path)
    run_file, metrics_file = folder / "run.json", folder / "metrics.json"
    if not folder.is_dir():
        raise EvalkitError(f"{folder} is not a run folder (no such directory)")
    if not run_file.exists():
        raise EvalkitError(f"{folder} is not a run folder (no run.json)")
    raw = read_json(run_file)
    status = raw.get("status") if isinstance(raw, dict) else None
    if status != "complete" or not metrics_file.exists():
        state = f"status '{status}'" if status != "complete" else "no metrics.json"
        raise EvalkitError(f"{folder} is not a finished run ({state}); rerun the same "
                           "`evalkit run` command to finish it before comparing")
    try:
        run = _RunJson.model_validate(raw)
        metrics = _MetricsJson.model_validate(read_json(metrics_file))
    except ValidationError as exc:
        raise EvalkitError(f"{folder}: malformed run folder ({_first_error(exc)})") from None
    if run.schema_version != SCHEMA_VERSION:
        raise EvalkitError(f"{folder}: run format version {run.schema_version} is not supported "
                           f"(this evalkit reads version {SCHEMA_VERSION})")
    samples = _read_samples(folder / "samples.jsonl")
    if not samples:
        raise EvalkitError(f"{folder}: samples.jsonl has no samples")

    doc_ids = sorted(samples, key=_natural_key)
    prompt_hashes = []
    for doc in doc_ids:
        hashes = {str(r["prompt_hash"]) for r in samples[doc].values()}
        if len(hashes) != 1:
            raise EvalkitError(f"{folder}: doc '{doc}' has samples with different prompt hashes")
        prompt_hashes.append(hashes.pop())

    kept: dict[str, MetricScores] = {}
    notes = []
    for name, spec in metrics.metrics.items():
        if spec.aggregation in SUMMARY_AGGREGATIONS:
            continue
        if spec.aggregation not in PER_ITEM_AGGREGATIONS:
            notes.append(f"{run.task.name}/{name}: aggregation '{spec.aggregation}' has no "
                         "per-item value, not compared")
            continue
        values = [_item_value(samples[d].values(), spec, f"{folder} doc '{d}'") for d in doc_ids]
        kept[name] = MetricScores(aggregation=spec.aggregation, score_key=spec.score_key,
                                  k=spec.k, higher_is_better=spec.higher_is_better, values=values)
    scores = TaskScores(
        task=run.task.name, version=run.task.version, generation=run.generation,
        checkpoint=run.checkpoint, run_key=run.run_key, source=str(folder),
        prompt_template_hash=run.task.prompt_template_hash,
        chat_template_hash=run.task.chat_template_hash,
        doc_ids=doc_ids, prompt_hashes=prompt_hashes, metrics=kept,
    )
    return RunData(scores=scores, samples=samples, notes=tuple(notes))


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file (``results/baseline-*.json``)."""
    path = Path(path)
    try:
        return Baseline.model_validate(read_json(path))
    except ValidationError as exc:
        raise EvalkitError(f"{path}: malformed baseline file ({_first_error(exc)})") from None


def load_comparison(path: str | Path) -> Comparison:
    """Read and validate a ``comparison.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / "comparison.json"
    try:
        return Comparison.model_validate(read_json(path))
    except ValidationError as exc:
        raise EvalkitError(f"{path}: malformed comparison.json ({_first_error(exc)})") from None


def _run_folders_under(root: Path, depth: int = 2) -> list[Path]:
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (child / "run.json").exists():
            found.append(child)
        elif depth > 1:
            found.extend(_run_folders_under(child, depth - 1))
    return found


def load_runs(path: str | Path, *, comparison_side: Literal["base", "tuned"] = "tuned"
              ) -> list[RunData]:
    """Load whatever a user points at as "a set of runs", one ``RunData`` per task.

    Accepts a run folder, a folder holding run folders (one per task, up to two levels down),
    a baseline file, or a ``comparison.json`` (its ``comparison_side`` is used).
    """
    path = Path(path)
    if not path.exists():
        raise EvalkitError(f"{path} does not exist")
    if path.is_dir():
        if (path / "run.json").exists():
            return [load_run(path)]
        if (path / "comparison.json").exists():
            path = path / "comparison.json"
        else:
            folders = _run_folders_under(path)
            if not folders:
                raise EvalkitError(f"{path} holds no run folders (no run.json found)")
            runs = [load_run(f) for f in folders]
            refuse_duplicate_tasks(runs, path)
            return runs
    if path.name == "run.json":
        return [load_run(path.parent)]
    raw = read_json(path)
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind == "evalkit.baseline":
        return [RunData(scores=t) for t in load_baseline(path).tasks]
    if kind == "evalkit.comparison":
        comp = load_comparison(path)
        return [RunData(scores=getattr(t, comparison_side)) for t in comp.tasks]
    raise EvalkitError(f"{path} is not a run folder, a comparison.json or an evalkit baseline "
                       "file (missing \"kind\")")


def refuse_duplicate_tasks(runs: Sequence[RunData], where: Path | str) -> None:
    seen: dict[str, str] = {}
    for run in runs:
        if run.task in seen:
            raise EvalkitError(f"{where} holds two runs of task '{run.task}' ({seen[run.task]} "
                               f"and {run.scores.source}); point at one run folder per task")
        seen[run.task] = run.scores.source or "?"


# --------------------------------------------------------------------------------------------
# Pairing
# --------------------------------------------------------------------------------------------


def _describe(values: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{v}'" for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def check_pairable(base: RunData, tuned: RunData, labels: tuple[str, str] = ("base", "tuned")
                   ) -> None:
    """Raise ``EvalkitError`` naming what differs when two runs cannot be paired item by item.

    ``labels`` name the two sides in messages (the gate says "baseline" and "candidate").
    """
    b, t = base.scores, tuned.scores
    lb, lt = labels
    if b.task != t.task:
        raise EvalkitError(f"cannot pair runs of different tasks: '{b.task}' vs '{t.task}'")
    if b.version != t.version:
        raise EvalkitError(f"task '{b.task}' versions differ ({b.version} in {lb} vs "
                           f"{t.version} in {lt}); rerun both with the same task version")
    if b.generation != t.generation:
        keys = sorted(set(b.generation) | set(t.generation))
        diffs = [f"{k}: {b.generation.get(k)!r} vs {t.generation.get(k)!r}"
                 for k in keys if b.generation.get(k) != t.generation.get(k)]
        raise EvalkitError(f"task '{b.task}': generation settings differ, {lb} vs {lt} "
                           f"({'; '.join(diffs)}); runs must use identical settings to be paired")
    b_docs, t_docs = set(b.doc_ids), set(t.doc_ids)
    only_base = [d for d in b.doc_ids if d not in t_docs]
    only_tuned = [d for d in t.doc_ids if d not in b_docs]
    if only_base or only_tuned:
        raise EvalkitError(
            f"task '{b.task}': the runs cover different items ({len(only_base)} only in {lb} "
            f"{_describe(only_base)}; {len(only_tuned)} only in {lt} {_describe(only_tuned)}); "
            "rerun both with the same --limit")
    tuned_hash = dict(zip(t.doc_ids, t.prompt_hashes, strict=True))
    differ = [d for d, h in zip(b.doc_ids, b.prompt_hashes, strict=True) if tuned_hash[d] != h]
    if differ:
        why = []
        if b.prompt_template_hash != t.prompt_template_hash:
            why.append("the prompt template differs")
        if b.chat_template_hash != t.chat_template_hash:
            why.append("the chat template differs")
        reason = f" ({' and '.join(why)})" if why else ""
        raise EvalkitError(
            f"task '{b.task}': prompts differ on {len(differ)} of {len(b.doc_ids)} items, e.g. "
            f"doc {_describe(differ, 1)}{reason}; refusing to pair answers to different prompts")
    if base.samples is not None and tuned.samples is not None:
        for doc in b.doc_ids:
            if set(base.samples[doc]) != set(tuned.samples[doc]):
                raise EvalkitError(f"task '{b.task}': doc '{doc}' has sample indices "
                                   f"{sorted(base.samples[doc])} in {lb} but "
                                   f"{sorted(tuned.samples[doc])} in {lt}")
    for name, mb in b.metrics.items():
        mt = t.metrics.get(name)
        if mt is None:
            raise EvalkitError(f"task '{b.task}': metric '{name}' is missing from the {lt} run")
        spec_b = (mb.aggregation, mb.score_key, mb.k, mb.higher_is_better)
        spec_t = (mt.aggregation, mt.score_key, mt.k, mt.higher_is_better)
        if spec_b != spec_t:
            raise EvalkitError(f"task '{b.task}': metric '{name}' is defined differently "
                               f"(aggregation, score_key, k, higher_is_better: {spec_b} vs "
                               f"{spec_t})")


def pair_by_task(base_runs: Sequence[RunData], tuned_runs: Sequence[RunData],
                 tasks: Sequence[str] | None = None, *, require_all_base: bool = False,
                 labels: tuple[str, str] = ("base", "tuned")
                 ) -> tuple[list[tuple[RunData, RunData]], list[str]]:
    """Match runs by task name. Returns the pairs and notes about tasks left unpaired.

    ``tasks`` restricts (and orders) the pairing and each named task must exist on both sides;
    ``require_all_base`` makes every base task mandatory (the gate's rule for baselines).
    """
    lb, lt = labels
    refuse_duplicate_tasks(base_runs, lb)
    refuse_duplicate_tasks(tuned_runs, lt)
    by_base = {r.task: r for r in base_runs}
    by_tuned = {r.task: r for r in tuned_runs}
    notes: list[str] = []
    if tasks:
        for name in tasks:
            for side, runs in ((lb, by_base), (lt, by_tuned)):
                if name not in runs:
                    raise EvalkitError(f"task '{name}' has no run on the {side} side "
                                       f"(found: {', '.join(sorted(runs)) or 'none'})")
        names = list(tasks)
    else:
        missing = [n for n in by_base if n not in by_tuned]
        if missing and require_all_base:
            raise EvalkitError(f"the {lt} has no run of {lb} task(s) {', '.join(missing)}")
        names = [n for n in by_base if n in by_tuned]
        notes += [f"task '{n}' only in {lb}, not compared" for n in missing]
        notes += [f"task '{n}' only in {lt}, not compared" for n in by_tuned if n not in by_base]
        if not names:
            raise EvalkitError(f"no task in common ({lb}: {', '.join(sorted(by_base))}; {lt}: "
                               f"{', '.join(sorted(by_tuned))})")
    return [(by_base[n], by_tuned[n]) for n in names], notes


# --------------------------------------------------------------------------------------------
# Statistics per row
# --------------------------------------------------------------------------------------------


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _row_rng(seed: int, task: str, metric: str) -> np.random.Generator:
    # Seed per row from (seed, task, metric): a row's CI and p do not depend on which other
    # tasks or metrics happen to be in the same comparison.
    return np.random.default_rng([seed, _stable_int(task), _stable_int(metric)])


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def metric_row(task: str, metric: str, base: MetricScores, tuned: MetricScores,
               doc_ids: Sequence[str], settings: ComparisonSettings) -> MetricRow:
    """Compute one row (before the Holm step fills ``p_holm`` and ``verdict``)."""
    pairs = [(d, x, y) for d, x, y in zip(doc_ids, base.values, tuned.values, strict=True)
             if x is not None and y is not None]
    common = {"task": task, "metric": metric, "aggregation": base.aggregation, "k": base.k,
              "higher_is_better": base.higher_is_better, "n_excluded": len(doc_ids) - len(pairs)}
    if not pairs:
        return MetricRow(**common, n_items=0, base=None, tuned=None, delta=None)
    docs = [p[0] for p in pairs]
    x = np.array([p[1] for p in pairs], dtype=float)
    y = np.array([p[2] for p in pairs], dtype=float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        bad = next(d for d, u, v in pairs if not (np.isfinite(u) and np.isfinite(v)))
        raise EvalkitError(f"task '{task}' metric '{metric}': doc '{bad}' has a non-finite "
                           "value (NaN or infinity); per-item values must be numbers")
    rng = _row_rng(settings.seed, task, metric)
    sign = 1.0 if base.higher_is_better else -1.0
    b = c = None
    if st.is_binary(x, y):
        # The percentile bootstrap under-covers 0/1 items at small n (75% at n = 20, p = 0.1);
        # Newcombe's paired interval keeps >= 93% (docs/ci-gate.md, tests/test_stats_coverage).
        low, high = st.paired_binary_ci(x, y, confidence=settings.confidence)
        test: TestName = "mcnemar-exact"
        # b/c follow the metric's direction: "right" is 1 when higher is better.
        b, c = st.discordant_counts(x, y) if sign > 0 else st.discordant_counts(y, x)
        p = st.mcnemar_exact(b, c)
    else:
        low, high = st.paired_bootstrap_ci(x, y, resamples=settings.resamples,
                                           confidence=settings.confidence, seed=rng)
        if settings.continuous_test == "wilcoxon":
            test, p = "wilcoxon", st.wilcoxon_signed_rank(x, y)
        else:
            test = "permutation"
            p = st.paired_permutation_test(x, y, resamples=settings.resamples, seed=rng)
    # Worst regressions and best improvements first; ties keep doc order.
    gain = sign * (y - x)
    regressions = [docs[i] for i in np.argsort(gain, kind="stable") if gain[i] < 0]
    improvements = [docs[i] for i in np.argsort(-gain, kind="stable") if gain[i] > 0]
    return MetricRow(
        **common, n_items=len(pairs), base=float(x.mean()), tuned=float(y.mean()),
        delta=float(y.mean() - x.mean()),
        base_stderr=_finite(st.clustered_sem(x)), tuned_stderr=_finite(st.clustered_sem(y)),
        ci_low=low, ci_high=high, test=test, p_value=p, b=b, c=c,
        regressions=regressions, improvements=improvements,
    )


def apply_holm(rows: Sequence[MetricRow], alpha: float) -> None:
    """Fill ``p_holm`` (Holm over all tested rows) and ``verdict`` at ``alpha``, in place."""
    pvals = np.array([r.p_value if r.p_value is not None else np.nan for r in rows], dtype=float)
    adjusted = st.holm(pvals) if len(rows) else np.array([])
    for row, q in zip(rows, adjusted, strict=True):
        row.p_holm = _finite(q)
        row.verdict = verdict(row, alpha)


def verdict(row: MetricRow, alpha: float) -> Verdict:
    """The verdict of a row whose ``p_holm`` is set."""
    if row.p_holm is None or row.delta is None:
        return "untested"
    gain = row.delta if row.higher_is_better else -row.delta
    if row.p_holm <= alpha and gain != 0:  # Holm (1979) and statsmodels reject at <=
        return "improved" if gain > 0 else "regressed"
    return "no significant change"


def _pick_sample(records: dict[int, dict[str, Any]], score_key: str, best: bool
                 ) -> dict[str, Any]:
    # For a regression show a sample where base passed and one where tuned failed (and the
    # reverse for an improvement): with n > 1 that is the contrast a reader needs to see.
    def score(r: dict[str, Any]) -> float:
        s = r["scores"].get(score_key)
        return float(s) if s is not None else (-np.inf if best else np.inf)

    ordered = sorted(records.items())
    pick = (max if best else min)(ordered, key=lambda kv: score(kv[1]))
    return pick[1]


def _sample_view(record: dict[str, Any], n_samples: int) -> SampleView:
    execution = record.get("execution")
    status = execution.get("status") if isinstance(execution, dict) else None
    extracted = record.get("extracted")
    return SampleView(
        sample_idx=int(record["sample_idx"]), completion=str(record.get("completion") or ""),
        extracted=extracted if isinstance(extracted, dict) else None,
        scores=dict(record.get("scores") or {}), execution_status=status,
        finish_reason=record.get("finish_reason"), n_samples=n_samples,
    )


def flipped_items(base: RunData, tuned: RunData, rows: Sequence[MetricRow]) -> list[FlippedItem]:
    """Every item that regressed or improved on some metric, regressions first."""
    items: dict[str, FlippedItem] = {}
    metric_specs = base.scores.metrics
    index = {d: i for i, d in enumerate(base.scores.doc_ids)}
    tuned_index = {d: i for i, d in enumerate(tuned.scores.doc_ids)}
    ordered = [(r, d, "regression") for r in rows for d in r.regressions]
    ordered += [(r, d, "improvement") for r in rows for d in r.improvements]
    for row, doc, direction in ordered:
        spec = metric_specs[row.metric]
        value = (spec.values[index[doc]],
                 tuned.scores.metrics[row.metric].values[tuned_index[doc]])
        item = items.get(doc)
        if item is None:
            item = FlippedItem(doc_id=doc, flips={}, values={})
            regressed = direction == "regression"
            # "best" on the side that was better, "worst" on the side that was worse.
            base_best = regressed == spec.higher_is_better
            for side, run, best in (("base", base, base_best), ("tuned", tuned, not base_best)):
                if run.samples is None or doc not in run.samples:
                    continue
                record = _pick_sample(run.samples[doc], spec.score_key, best)
                setattr(item, side, _sample_view(record, len(run.samples[doc])))
                item.target = record.get("target", item.target)
                item.prompt = record.get("prompt", item.prompt)
            items[doc] = item
        item.flips.setdefault(row.metric, direction)
        item.values[row.metric] = (float(value[0]), float(value[1]))
    return list(items.values())


def check_stats_options(*, alpha: float = 0.05, confidence: float = 0.95,
                        resamples: int = st.DEFAULT_RESAMPLES, **_: Any) -> None:
    """Refuse unusable statistics settings (before any generation is spent on them)."""
    if not 0 < alpha < 1:
        raise EvalkitError(f"--alpha must be between 0 and 1, got {alpha}")
    if not 0 < confidence < 1:
        raise EvalkitError(f"--confidence must be between 0 and 1, got {confidence}")
    if resamples < 1_000:
        raise EvalkitError(f"--resamples must be at least 1000, got {resamples}")


def compare_runs(pairs: Sequence[tuple[RunData, RunData]], *, alpha: float = 0.05,
                 confidence: float = 0.95, resamples: int = st.DEFAULT_RESAMPLES, seed: int = 0,
                 continuous_test: st.ContinuousTest = "permutation",
                 notes: Sequence[str] = (), labels: tuple[str, str] = ("base", "tuned")
                 ) -> Comparison:
    """Compare several (base run, tuned run) pairs, one per task, into one ``Comparison``.

    ``labels`` name the two sides in error messages.
    """
    if not pairs:
        raise EvalkitError("nothing to compare: no (base, tuned) run pairs")
    check_stats_options(alpha=alpha, confidence=confidence, resamples=resamples)
    settings = ComparisonSettings(alpha=alpha, confidence=confidence, resamples=resamples,
                                  seed=seed, continuous_test=continuous_test)
    all_notes = list(notes)
    rows: list[MetricRow] = []
    task_rows: list[tuple[RunData, RunData, list[MetricRow]]] = []
    for base, tuned in pairs:
        check_pairable(base, tuned, labels)
        all_notes += [*base.notes, *[n for n in tuned.notes if n not in base.notes]]
        tuned_pos = {d: i for i, d in enumerate(tuned.scores.doc_ids)}
        these = []
        for name, mb in base.scores.metrics.items():
            mt = tuned.scores.metrics[name]
            # Put the tuned values in base doc order so the pairs line up.
            aligned = mt.model_copy(update={
                "values": [mt.values[tuned_pos[d]] for d in base.scores.doc_ids]})
            these.append(metric_row(base.task, name, mb, aligned, base.scores.doc_ids, settings))
        rows += these
        task_rows.append((base, tuned, these))
    apply_holm(rows, alpha)
    tasks = [TaskPair(task=b.task, base=b.scores, tuned=t.scores,
                      flipped=flipped_items(b, t, these)) for b, t, these in task_rows]
    first_base, first_tuned = pairs[0]
    comparison = Comparison(base_label=first_base.scores.checkpoint.label,
                            tuned_label=first_tuned.scores.checkpoint.label, settings=settings,
                            rows=rows, tasks=tasks, notes=all_notes)
    from evalkit.conjugate import recovery

    comparison.recovery = [r.model_dump() for r in recovery(comparison)]
    return comparison


def compare_paths(base: str | Path, tuned: str | Path, tasks: Sequence[str] | None = None,
                  **options: Any) -> Comparison:
    """Compare two run folders (or two folders of run folders, paired by task name)."""
    pairs, notes = pair_by_task(load_runs(base, comparison_side="base"),
                                load_runs(tuned, comparison_side="tuned"), tasks)
    return compare_runs(pairs, notes=notes, **options)


def is_run_source(path: str | Path) -> bool:
    """True when ``path`` looks like runs on disk (not a checkpoint spec)."""
    p = Path(path)
    if p.is_file():
        return p.suffix == ".json"
    if not p.is_dir():
        return False
    return ((p / "run.json").exists() or (p / "comparison.json").exists()
            or bool(_run_folders_under(p)))


# --------------------------------------------------------------------------------------------
# Output: comparison.json, terminal table, Markdown
# --------------------------------------------------------------------------------------------


def write_comparison(comparison: Comparison, out: str | Path) -> tuple[Path, Path]:
    """Write ``comparison.json`` and ``comparison.md`` into ``out``; returns both paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "comparison.json", folder / "comparison.md"
    json_path.write_text(comparison.model_dump_json(indent=1) + "\n", encoding="utf-8")
    md_path.write_text(comparison_markdown(comparison), encoding="utf-8")
    return json_path, md_path


# Metrics that are not proportions (lm-eval's perplexity family): tables show them in their own
# units; every other metric is a rate in [0, 1], shown in % with differences in points.
_RAW_UNIT_METRICS = frozenset({"bits_per_byte", "byte_perplexity", "word_perplexity",
                               "perplexity"})


def is_rate(metric: str) -> bool:
    return metric.split(",")[0] not in _RAW_UNIT_METRICS


def value_text(metric: str, value: float | None) -> str:
    """A metric's value for a table: ``31.6%`` for rates, ``0.931`` otherwise."""
    if value is None:
        return "—"
    return f"{100 * value:.1f}%" if is_rate(metric) else f"{value:.4g}"


def delta_text(metric: str, value: float | None) -> str:
    """A difference: ``+7.0 pp`` for rates, ``+0.071`` in the metric's units otherwise."""
    if value is None:
        return "—"
    return f"{100 * value:+.1f} pp" if is_rate(metric) else f"{value:+.3g}"


def fmt_p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3g}"


def ci_text(row: MetricRow) -> str:
    if row.ci_low is None or row.ci_high is None:
        return "—"
    if not is_rate(row.metric):
        return f"[{row.ci_low:+.3g}, {row.ci_high:+.3g}]"
    return f"[{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}] pp"


def _test_text(row: MetricRow) -> str:
    if row.test == "mcnemar-exact":
        return f"McNemar b={row.b} c={row.c}"
    return row.test


_VERDICT_STYLE = {"improved": "bold green", "regressed": "bold red",
                  "no significant change": "dim", "untested": "yellow"}
_VERDICT_MARK = {"improved": "✅ improved", "regressed": "❌ regressed",
                 "no significant change": "no significant change", "untested": "⚠️ untested"}


def settings_line(comparison: Comparison) -> str:
    s = comparison.settings
    tested = sum(r.p_value is not None for r in comparison.rows)
    return (f"Δ and CI in percentage points (perplexity-type metrics in their own units); "
            f"{round(100 * s.confidence)}% CI: Newcombe's paired interval for 0/1 items, else "
            f"paired bootstrap over items ({s.resamples:,} resamples, seed {s.seed}); verdicts at "
            f"α = {s.alpha} with Holm's correction across all {tested} tested rows.")


def comparison_table(comparison: Comparison, title: str | None = None):  # -> rich.table.Table
    """The terminal summary table (rich)."""
    from rich.table import Table

    table = Table(title=title or f"{comparison.base_label} → {comparison.tuned_label}",
                  caption=settings_line(comparison), caption_justify="left")
    for name, justify in (("task", "left"), ("metric", "left"), ("n", "right"),
                          ("base", "right"), ("tuned", "right"), ("Δ", "right"),
                          ("95% CI", "right"), ("test", "left"), ("p", "right"),
                          ("p Holm", "right"), ("verdict", "left")):
        table.add_column(name, justify=justify)
    if comparison.tuco:
        table.add_column("TuCo", justify="right")
    for row in comparison.rows:
        cells = [row.task, row.metric, str(row.n_items), value_text(row.metric, row.base),
                 value_text(row.metric, row.tuned), delta_text(row.metric, row.delta),
                 ci_text(row), _test_text(row), fmt_p(row.p_value),
                 fmt_p(row.p_holm), f"[{_VERDICT_STYLE[row.verdict]}]{row.verdict}[/]"]
        table.add_row(*cells, *([_tuco_cell(comparison.tuco, row.task)] if comparison.tuco
                                else []))
    return table


def _tuco_cell(tuco: dict[str, dict[str, float]], task: str) -> str:
    value = tuco.get(task)
    return f"{value['mean']:.3f}" if value else "—"


def markdown_table(rows: Sequence[MetricRow], tuco: dict[str, dict[str, float]] | None = None
                   ) -> str:
    lines = ["| task | metric | n | base | tuned | Δ | 95% CI | test | p (Holm) | "
             "verdict |" + (" TuCo |" if tuco else ""),
             "|---|---|---:|---:|---:|---:|---:|---|---:|---|" + ("---:|" if tuco else "")]
    for r in rows:
        lines.append(f"| {r.task} | `{r.metric}` | {r.n_items} | {value_text(r.metric, r.base)} "
                     f"| {value_text(r.metric, r.tuned)} | {delta_text(r.metric, r.delta)} "
                     f"| {ci_text(r)} | {_test_text(r)} | {fmt_p(r.p_holm)} | "
                     f"{_VERDICT_MARK[r.verdict]} |"
                     + (f" {_tuco_cell(tuco, r.task)} |" if tuco else ""))
    return "\n".join(lines)


def _clip(text: str, max_lines: int = 30, max_chars: int = 1_500) -> str:
    text = text.rstrip()
    lines = text.splitlines()
    clipped = "\n".join(lines[:max_lines])[:max_chars]
    hidden = len(text) - len(clipped)
    return clipped + (f"\n… ({hidden} more characters)" if hidden > 0 else "")


def _side_header(side: str, view: SampleView | None) -> str:
    if view is None:
        return f"{side} (completion not stored)"
    bits = []
    if view.extracted:
        bits += [f"{k}: {v}" for k, v in view.extracted.items()]
    if view.execution_status:
        bits.append(f"execution: {view.execution_status}")
    if view.n_samples > 1:
        bits.append(f"sample {view.sample_idx} of {view.n_samples}")
    return side + (" · " + " · ".join(bits) if bits else "")


def flipped_item_markdown(item: FlippedItem) -> str:
    """One flipped item: what changed, then both completions side by side (an HTML table)."""
    changes = ", ".join(f"`{m}` {value_text(m, v[0])} → {value_text(m, v[1])}"
                        for m, v in item.values.items())
    kind = "regression" if "regression" in item.flips.values() else "improvement"
    target = "" if item.target is None else f" · target `{_clip(str(item.target), 1, 80)}`"
    cells = []
    for side in ("base", "tuned"):
        view: SampleView | None = getattr(item, side)
        body = html.escape(_clip(view.completion)) if view else "—"
        cells.append((html.escape(_side_header(side, view)), body))
    return (f"**{kind} · doc `{item.doc_id}`** — {changes}{target}\n\n"
            f"<table><tr><th>{cells[0][0]}</th><th>{cells[1][0]}</th></tr>\n"
            f"<tr><td><pre>{cells[0][1]}</pre></td><td><pre>{cells[1][1]}</pre></td></tr>"
            "</table>\n")


def _details(comparison: Comparison, per_kind: int) -> str:
    blocks = []
    for task in comparison.tasks:
        regs = [i for i in task.flipped if "regression" in i.flips.values()]
        imps = [i for i in task.flipped if "regression" not in i.flips.values()]
        if not task.flipped or per_kind == 0:
            if task.flipped:
                blocks.append(f"- **{task.task}**: {len(regs)} regressed items, {len(imps)} "
                              "improved items (see comparison.json)\n")
            continue
        shown = regs[:per_kind] + imps[:per_kind]
        summary = (f"<b>{html.escape(task.task)}</b>: {len(regs)} regressed items, {len(imps)} "
                   f"improved items (showing {min(len(regs), per_kind)} and "
                   f"{min(len(imps), per_kind)})")
        body = "\n".join(flipped_item_markdown(i) for i in shown)
        blocks.append(f"<details><summary>{summary}</summary>\n\n{body}\n</details>\n")
    return "\n".join(blocks)


def comparison_markdown(comparison: Comparison, *, max_items: int = 10,
                        max_chars: int = 60_000) -> str:
    """A PR-comment-sized summary: the table, then the flipped items collapsed in <details>.

    GitHub caps a comment at 65,536 characters; the item lists shrink until the text fits.
    """
    counts = comparison.summary()
    head = [f"### evalkit compare: `{comparison.base_label}` → `{comparison.tuned_label}`", "",
            f"{counts['regressed']} regressed · {counts['improved']} improved · "
            f"{counts['no significant change']} no significant change"
            + (f" · {counts['untested']} untested" if counts["untested"] else ""), "",
            markdown_table(comparison.rows, comparison.tuco), "",
            f"<sub>{settings_line(comparison)}</sub>", ""]
    if comparison.recovery:
        from evalkit.conjugate import RecoveryRow, recovery_markdown

        head += [recovery_markdown([RecoveryRow(**r) for r in comparison.recovery])]
    head += [f"> note: {n}" for n in comparison.notes]
    text = "\n".join(head)
    per_kind = max_items
    while True:
        full = text + "\n" + _details(comparison, per_kind)
        if len(full) <= max_chars or per_kind == 0:
            return full
        per_kind //= 2
