"""The ``results/`` store: one small, versioned JSON record per checkpoint × task × generation
config, and one per paired comparison (its verdict rows, no items).

Records are content-addressed. A record's *key* says what it is about (checkpoint fingerprint,
task and task version, prompt hash, generation settings); its *digest* is the hash of its
content. Publishing writes ``<store>/runs/<task>/<checkpoint>-<key>.json``: the same content again
is a no-op, different content under the same key is refused (two different numbers for the same
question: the user must say which one is right by removing the old record).

Samples never go into the store; a record names the run folder they are in.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evalkit.compare.schema import CheckpointRef
from evalkit.errors import EvalkitError

SCHEMA_VERSION = 1
RUN_KIND = "evalkit.result.run"
COMPARISON_KIND = "evalkit.result.comparison"


class Lineage(BaseModel):
    """Where a tuned checkpoint came from (``evalkit_finetune.json``)."""

    base_spec: str | None = None
    base_fingerprint: str | None = None
    method: str | None = None
    adapter: dict[str, Any] | None = None  # LoRA rank, alpha, scaling, target modules
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    data: str | None = None
    seed: int | None = None


class TaskInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    version: str
    spec_hash: str | None = None
    prompt_template_hash: str | None = None
    chat_template_hash: str | None = None


class MetricValue(BaseModel):
    model_config = ConfigDict(extra="ignore")
    value: float | None
    stderr: float | None = None
    n: int | None = None
    aggregation: str | None = None
    higher_is_better: bool = True


class PublishedRecord(BaseModel):
    """What every record in the store starts with: its schema version, its kind (which model
    reads it), and its key and digest (filled in by ``seal``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: str
    key: str = ""
    digest: str = ""


class RunRecord(PublishedRecord):
    """One checkpoint × task × generation config."""

    kind: Literal["evalkit.result.run"] = RUN_KIND
    checkpoint: CheckpointRef
    lineage: Lineage | None = None
    task: TaskInfo
    prompt_hash: str  # over every item's prompt hash: same items, same prompts
    generation: dict[str, Any]
    seed: int | None = None
    limit: int | None = None
    metrics: dict[str, MetricValue]
    backend: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    hardware: dict[str, Any] | None = None
    timings: dict[str, Any] = Field(default_factory=dict)
    date: str | None = None
    run_dir: str | None = None  # where the samples are
    run_key: str | None = None


class ComparisonRow(BaseModel):
    model_config = ConfigDict(extra="ignore")
    task: str
    metric: str
    n_items: int
    base: float | None
    tuned: float | None
    delta: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    test: str = "none"
    p_holm: float | None = None
    verdict: str = "untested"
    b: int | None = None
    c: int | None = None
    higher_is_better: bool = True


class ComparisonRecord(PublishedRecord):
    """A paired comparison's verdicts, so the leaderboard shows Δ, CI and verdict."""

    kind: Literal["evalkit.result.comparison"] = COMPARISON_KIND
    base: CheckpointRef
    tuned: CheckpointRef
    settings: dict[str, Any]
    rows: list[ComparisonRow]
    created: str | None = None
    evalkit_version: str | None = None
    compare_dir: str | None = None


Record = RunRecord | ComparisonRecord


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def run_key(rec: RunRecord) -> str:
    return _hash({"fingerprint": rec.checkpoint.fingerprint, "task": rec.task.name,
                  "version": rec.task.version, "prompt_hash": rec.prompt_hash,
                  "generation": rec.generation, "seed": rec.seed})[:16]


def comparison_key(rec: ComparisonRecord) -> str:
    return _hash({"base": rec.base.fingerprint, "tuned": rec.tuned.fingerprint,
                  "tasks": sorted({r.task for r in rec.rows}), "settings": rec.settings})[:16]


# Where the samples lie is not part of the result: the same run published from another
# checkout is the same record.
_NOT_CONTENT = {"digest", "run_dir", "compare_dir"}


def seal(rec: Record) -> Record:
    """Fill in ``key`` and ``digest`` (the digest covers the content, not itself or paths)."""
    key = run_key(rec) if isinstance(rec, RunRecord) else comparison_key(rec)
    body = rec.model_copy(update={"key": key, "digest": ""})
    return body.model_copy(update={"digest": _hash(body.model_dump(mode="json",
                                                                   exclude=_NOT_CONTENT))[:32]})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "x"


def record_path(store: Path, rec: Record) -> Path:
    if isinstance(rec, RunRecord):
        name = f"{_slug(rec.checkpoint.label)}-{rec.key}.json"
        return store / "runs" / _slug(rec.task.name) / name
    return (store / "comparisons"
            / f"{_slug(rec.base.label)}-vs-{_slug(rec.tuned.label)}-{rec.key}.json")


def write_record(store: Path, rec: Record) -> tuple[Path, bool]:
    """Write a sealed record; returns (path, written). Same content: not written; a different
    record under the same key: refused."""
    rec = seal(rec)
    path = record_path(store, rec)
    if path.exists():
        old = read_record(path)
        if old.digest == rec.digest:
            return path, False
        raise EvalkitError(
            f"{path} already holds a different result for the same key (checkpoint, task, "
            f"prompts and generation settings; digest {old.digest[:12]} vs {rec.digest[:12]}); "
            "remove that record first if the new run should replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(rec.model_dump_json(indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path, True


def read_record(path: Path) -> Record:
    """Read and validate one record; a record of another schema version is refused clearly."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalkitError(f"{path} is not a readable result record ({exc})") from None
    if not isinstance(raw, dict) or raw.get("kind") not in (RUN_KIND, COMPARISON_KIND):
        raise EvalkitError(f"{path} is not an evalkit result record (no known \"kind\")")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise EvalkitError(
            f"{path}: result record schema version {version!r} is not supported (this evalkit "
            f"reads version {SCHEMA_VERSION}; "
            + ("upgrade evalkit)" if newer else "republish it from its run folder)"))
    model = RunRecord if raw["kind"] == RUN_KIND else ComparisonRecord
    try:
        rec = model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise EvalkitError(f"{path}: malformed result record "
                           f"({'.'.join(map(str, err['loc']))}: {err['msg']})") from None
    if seal(rec).digest != rec.digest:
        raise EvalkitError(f"{path}: record content does not match its digest (edited by hand?)")
    return rec


def is_store(path: Path) -> bool:
    return path.is_dir() and ((path / "runs").is_dir() or (path / "comparisons").is_dir())


def read_store(store: Path) -> list[Record]:
    """Every record under ``store`` (sorted by path, so reports are stable)."""
    return [read_record(p) for p in sorted(store.glob("runs/*/*.json"))
            + sorted(store.glob("comparisons/*.json"))]
