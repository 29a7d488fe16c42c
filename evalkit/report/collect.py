"""Read what a report is made of: results stores, run folders, compare folders, analyze folders
and finetune folders. The one module that knows those on-disk formats (through their own
readers: ``evalkit.run.format``, ``evalkit.compare.load.load_comparison``, the analysis and
fine-tune pydantic schemas), so a change of format touches only this file.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evalkit.compare.schema import CheckpointRef
from evalkit.errors import EvalkitError
from evalkit.report.store import (
    ComparisonRecord,
    ComparisonRow,
    Lineage,
    MetricValue,
    Record,
    RunRecord,
    TaskInfo,
    is_store,
    read_store,
)

FINETUNE_MANIFEST = "evalkit_finetune.json"  # evalkit.finetune.schema.MANIFEST_NAME


@dataclass
class Analysis:
    """An ``evalkit analyze`` folder."""

    path: Path
    summary: Any  # evalkit.analysis.report.AnalysisSummary
    matrices: list[dict[str, Any]]  # matrices.csv rows (layer, module, intruders, ranks)
    tuco: list[Any] = field(default_factory=list)  # evalkit.analysis.tuco.TucoSummary


@dataclass
class Finetune:
    """An ``evalkit finetune`` output folder."""

    path: Path
    manifest: Any  # evalkit.finetune.schema.Manifest


@dataclass
class Flip:
    """One flipped item with what the flip explorer shows (stderr only from run folders)."""

    item: Any  # evalkit.compare.schema.FlippedItem
    task: str
    base_stderr: str | None = None
    tuned_stderr: str | None = None


@dataclass
class Compare:
    path: Path
    comparison: Any  # evalkit.compare.schema.Comparison
    flips: list[Flip]


@dataclass
class Inputs:
    records: list[Record] = field(default_factory=list)
    compares: list[Compare] = field(default_factory=list)
    analyses: list[Analysis] = field(default_factory=list)
    finetunes: list[Finetune] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[RunRecord]:
        return [r for r in self.records if isinstance(r, RunRecord)]

    @property
    def comparison_records(self) -> list[ComparisonRecord]:
        return [r for r in self.records if isinstance(r, ComparisonRecord)]


# --------------------------------------------------------------------------------------------
# Records from run folders and comparisons
# --------------------------------------------------------------------------------------------


def _lineage(checkpoint: dict[str, Any]) -> Lineage | None:
    """The fine-tune manifest next to a tuned checkpoint, when the checkpoint is a folder."""
    for key in ("path", "spec"):
        where = checkpoint.get(key)
        if not where or str(where).startswith("builtin:"):
            continue
        manifest = Path(where) / FINETUNE_MANIFEST
        if manifest.is_file():
            m = _read_manifest(manifest)
            return Lineage(base_spec=m.base.spec, base_fingerprint=m.base.fingerprint,
                           method=m.method, adapter=m.lora.model_dump() if m.lora else None,
                           hyperparameters=m.hyperparameters, data=m.data.spec, seed=m.seed)
    if checkpoint.get("base_fingerprint"):
        return Lineage(base_fingerprint=checkpoint["base_fingerprint"], method="adapter")
    return None


@functools.lru_cache(maxsize=64)
def _load_run(folder: Path) -> tuple[dict, list[dict], dict]:
    # Many comparisons share one base: each run folder is read once per report.
    from evalkit.run.format import load_run

    return load_run(folder).dicts()


def run_record(folder: Path, scores: Any = None) -> RunRecord:
    """The leaderboard record of one finished run folder. ``scores`` (the run's
    ``evalkit.compare.schema.TaskScores`` from a comparison) saves reading its samples again."""
    if scores is not None and (folder / "metrics.json").exists():
        from evalkit.run.format import read_header, read_metrics

        run = json.loads(read_header(folder).model_dump_json())
        metrics = json.loads(read_metrics(folder).model_dump_json())
        if run.get("status") != "complete" or run.get("run_key") != scores.run_key:
            return run_record(folder)  # changed since the comparison: read it in full
        pairs = set(zip(scores.doc_ids, scores.prompt_hashes, strict=True))
    else:
        run, samples, metrics = _load_run(folder.resolve())
        pairs = {(str(s["doc_id"]), str(s.get("prompt_hash"))) for s in samples}
    prompt_hash = hashlib.sha256(json.dumps(sorted(pairs)).encode()).hexdigest()[:16]
    timings = run.get("timings") or {}
    backend = run.get("backend") or {}
    try:
        return RunRecord(
            checkpoint=CheckpointRef.model_validate(run.get("checkpoint") or {}),
            lineage=_lineage(run.get("checkpoint") or {}),
            task=TaskInfo.model_validate({**run["task"], "version": str(run["task"]["version"])}),
            prompt_hash=prompt_hash, generation=run.get("generation") or {},
            seed=run.get("seed"), limit=run.get("limit"),
            metrics={k: MetricValue.model_validate(v) for k, v in metrics["metrics"].items()},
            backend={"name": backend.get("name"), "version": backend.get("version"),
                     "options": backend.get("options") or {}},
            versions={k: str(v) for k, v in (run.get("versions") or {}).items()},
            hardware=run.get("hardware"),
            timings={k: v for k, v in timings.items() if k != "started"},
            date=timings.get("finished"), run_dir=str(folder),
            run_key=run.get("run_key"))
    except (KeyError, TypeError, ValidationError) as exc:
        raise EvalkitError(f"{folder}: run folder lacks what a result record needs ({exc})"
                           ) from None


def comparison_record(comparison: Any, folder: Path) -> ComparisonRecord:
    first = comparison.tasks[0] if comparison.tasks else None
    ref = {"base": first.base.checkpoint, "tuned": first.tuned.checkpoint} if first else {}
    return ComparisonRecord(
        base=CheckpointRef.model_validate(ref["base"].model_dump() if ref else
                                           {"name": comparison.base_label}),
        tuned=CheckpointRef.model_validate(ref["tuned"].model_dump() if ref else
                                            {"name": comparison.tuned_label}),
        settings=comparison.settings.model_dump(),
        rows=[ComparisonRow.model_validate(r.model_dump()) for r in comparison.rows],
        created=comparison.created, evalkit_version=comparison.evalkit_version,
        compare_dir=str(folder))


def _run_folders(path: Path) -> list[Path]:
    if (path / "run.json").exists():
        return [path]
    return sorted({p.parent for p in path.glob("*/run.json")} | {p.parent for p in
                                                                 path.glob("*/*/run.json")})


def publishable(path: Path, comparison: Any = None) -> list[Record]:
    """Records for ``evalkit publish``: run folders (or folders of them) and compare folders
    (the comparison plus the run folders it was made from, when they are still there)."""
    from evalkit.compare.load import load_comparison

    if not path.exists():
        raise EvalkitError(f"{path} does not exist")
    if (path / "comparison.json").exists() or path.name == "comparison.json":
        folder = path if path.is_dir() else path.parent
        comparison = comparison or load_comparison(folder)
        records: list[Record] = []
        for pair in comparison.tasks:
            for side in (pair.base, pair.tuned):
                if side.source and (Path(side.source) / "run.json").exists():
                    records.append(run_record(Path(side.source), side))
        return [*records, comparison_record(comparison, folder)]
    folders = _run_folders(path) if path.is_dir() else []
    if not folders:
        raise EvalkitError(f"{path} is not a run folder, a folder of run folders or a compare "
                           "folder (no run.json or comparison.json)")
    return [run_record(f) for f in folders]


# --------------------------------------------------------------------------------------------
# Compare, analyze and finetune folders
# --------------------------------------------------------------------------------------------


def _stderr_by_doc(source: str | None) -> dict[tuple[str, int], str]:
    """Sandbox stderr of a run folder's samples (the comparison keeps only the status)."""
    if not source or not (Path(source) / "samples.jsonl").exists():
        return {}
    try:
        _, samples, _ = _load_run(Path(source).resolve())
    except EvalkitError:
        return {}
    out = {}
    for s in samples:
        ex = s.get("execution")
        if isinstance(ex, dict):
            detail = ex.get("stderr") or ex.get("detail")
            if detail:
                out[(str(s["doc_id"]), int(s["sample_idx"]))] = str(detail)
    return out


def read_compare(folder: Path) -> Compare:
    from evalkit.compare.load import load_comparison

    comparison = load_comparison(folder)
    flips = []
    for pair in comparison.tasks:
        # Only code tasks have sandbox output to show.
        code = any(side and side.execution_status for f in pair.flipped
                   for side in (f.base, f.tuned))
        base_err = _stderr_by_doc(pair.base.source) if code else {}
        tuned_err = _stderr_by_doc(pair.tuned.source) if code else {}
        for item in pair.flipped:
            flips.append(Flip(
                item=item, task=pair.task,
                base_stderr=base_err.get((item.doc_id, item.base.sample_idx)) if item.base
                else None,
                tuned_stderr=tuned_err.get((item.doc_id, item.tuned.sample_idx)) if item.tuned
                else None))
    return Compare(path=folder, comparison=comparison, flips=flips)


def _read_manifest(path: Path) -> Any:
    from evalkit.finetune.schema import Manifest

    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        raise EvalkitError(f"{path}: not a readable fine-tune manifest ({exc})") from None


def read_analysis(folder: Path) -> Analysis:
    import csv

    from evalkit.analysis.report import AnalysisSummary
    from evalkit.analysis.tuco import TucoSummary

    try:
        summary = AnalysisSummary.model_validate_json(
            (folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        raise EvalkitError(f"{folder}/summary.json: not an analysis summary ({exc})") from None
    matrices = []
    csv_path = folder / summary.files.get("matrices_csv", "matrices.csv")
    if csv_path.exists():
        with csv_path.open(encoding="utf-8") as f:
            matrices = list(csv.DictReader(f))
    tuco = []
    for p in sorted(folder.glob("tuco_*.json")):
        try:
            tuco.append(TucoSummary.model_validate_json(p.read_text(encoding="utf-8")))
        except ValidationError as exc:
            raise EvalkitError(f"{p}: not a TuCo summary ({exc})") from None
    return Analysis(path=folder, summary=summary, matrices=matrices, tuco=tuco)


def collect(paths: list[Path]) -> Inputs:
    """Sort every PATH by what it is and read it; refuses what is none of them."""
    inputs = Inputs()
    seen: set[str] = set()

    def add(rec: Record) -> None:
        from evalkit.report.store import seal

        rec = seal(rec)
        if rec.digest not in seen:
            seen.add(rec.digest)
            inputs.records.append(rec)

    for path in paths:
        if not path.exists():
            raise EvalkitError(f"{path} does not exist")
        inputs.sources.append(str(path))
        if is_store(path):
            for rec in read_store(path):
                add(rec)
        elif (path / "comparison.json").exists() or path.name == "comparison.json":
            folder = path if path.is_dir() else path.parent
            compare = read_compare(folder)
            inputs.compares.append(compare)
            for rec in publishable(folder, compare.comparison):
                add(rec)
        elif (path / "summary.json").exists() and (path / "matrices.csv").exists():
            inputs.analyses.append(read_analysis(path))
        elif (path / FINETUNE_MANIFEST).exists():
            inputs.finetunes.append(Finetune(path=path,
                                             manifest=_read_manifest(path / FINETUNE_MANIFEST)))
        elif path.is_dir() and _run_folders(path):
            for folder in _run_folders(path):
                add(run_record(folder))
        else:
            raise EvalkitError(f"{path} is not a results store, run folder, compare folder, "
                               "analyze folder or finetune folder")
    return inputs
