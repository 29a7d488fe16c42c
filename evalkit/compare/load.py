"""Load what a user points at as runs: a run folder (through ``evalkit.run.format``), a folder of
run folders, a baseline file or a comparison.json, as per-item ``TaskScores``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from evalkit.compare.schema import (
    PER_ITEM_AGGREGATIONS,
    SUMMARY_AGGREGATIONS,
    Baseline,
    CheckpointRef,
    Comparison,
    MetricScores,
    TaskScores,
)
from evalkit.errors import EvalkitError
from evalkit.run.format import first_error, read_json


@dataclass
class RunData:
    """A loaded run: its per-item scores and, for run folders, the samples themselves."""

    scores: TaskScores
    samples: dict[str, dict[int, dict[str, Any]]] | None = None  # doc_id -> sample_idx -> record
    notes: tuple[str, ...] = ()

    @property
    def task(self) -> str:
        return self.scores.task


def _natural_key(text: str) -> tuple[Any, ...]:
    # "HumanEval/2" < "HumanEval/10", and numeric GSM8K ids sort as numbers.
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def load_run(path: str | Path) -> RunData:
    """Load a finished run folder (``evalkit.run.format``) as per-item values per metric."""
    from evalkit.run.format import load_run as read_run
    from evalkit.scoring import Metric
    from evalkit.scoring.metrics import per_item_values

    run = read_run(path)
    folder, header = run.path, run.header
    samples: dict[str, dict[int, dict[str, Any]]] = {}
    for sample in run.samples:
        # A resumed writer may append a sample twice; like format.repair_samples, the first wins.
        samples.setdefault(sample.doc_id, {}).setdefault(sample.sample_idx, sample.model_dump())
    if not samples:
        raise EvalkitError(f"{folder}: samples.jsonl has no samples")

    doc_ids = sorted(samples, key=_natural_key)
    prompt_hashes = []
    for doc in doc_ids:
        hashes = {str(r["prompt_hash"]) for r in samples[doc].values()}
        if len(hashes) != 1:
            raise EvalkitError(f"{folder}: doc '{doc}' has samples with different prompt hashes")
        prompt_hashes.append(hashes.pop())

    records = [r for doc in doc_ids for r in samples[doc].values()]
    kept: dict[str, MetricScores] = {}
    notes = []
    for name, spec in run.metrics.metrics.items():
        if spec.aggregation in SUMMARY_AGGREGATIONS:
            continue
        if spec.aggregation not in PER_ITEM_AGGREGATIONS:
            notes.append(f"{header.task.name}/{name}: aggregation '{spec.aggregation}' has no "
                         "per-item value, not compared")
            continue
        metric = Metric(name, spec.score_key, spec.aggregation, spec.k or 1,
                        spec.higher_is_better)
        try:
            per_item = per_item_values(records, metric)
        except ValueError as exc:
            raise EvalkitError(f"{folder}: {exc}") from None
        kept[name] = MetricScores(aggregation=spec.aggregation,  # type: ignore[arg-type]
                                  score_key=spec.score_key,
                                  k=spec.k, higher_is_better=spec.higher_is_better,
                                  values=[per_item.get(d) for d in doc_ids])
    scores = TaskScores(
        task=header.task.name, version=header.task.version, generation=header.generation,
        checkpoint=CheckpointRef.model_validate(header.checkpoint.model_dump()),
        run_key=header.run_key, source=str(folder),
        prompt_template_hash=header.task.prompt_template_hash,
        chat_template_hash=header.task.chat_template_hash,
        doc_ids=doc_ids, prompt_hashes=prompt_hashes, metrics=kept,
    )
    return RunData(scores=scores, samples=samples, notes=tuple(notes))


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file (``results/baseline-*.json``)."""
    path = Path(path)
    try:
        return Baseline.model_validate(read_json(path))
    except ValidationError as exc:
        raise EvalkitError(f"{path}: malformed baseline file ({first_error(exc)})") from None


def load_comparison(path: str | Path) -> Comparison:
    """Read and validate a ``comparison.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / "comparison.json"
    try:
        return Comparison.model_validate(read_json(path))
    except ValidationError as exc:
        raise EvalkitError(f"{path}: malformed comparison.json ({first_error(exc)})") from None


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




def is_run_source(path: str | Path) -> bool:
    """True when ``path`` looks like runs on disk (not a checkpoint spec)."""
    p = Path(path)
    if p.is_file():
        return p.suffix == ".json"
    if not p.is_dir():
        return False
    return ((p / "run.json").exists() or (p / "comparison.json").exists()
            or bool(_run_folders_under(p)))
