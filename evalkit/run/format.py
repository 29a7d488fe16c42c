"""The run-folder files as pydantic models: the only code that reads or writes them.

A run folder (docs/run-format.md) holds ``run.json`` (``RunHeader``), ``samples.jsonl`` (one
``Sample`` per line) and ``metrics.json`` (``MetricsFile``). The writer, the readers (resume,
``compare``, ``check``, ``report``) and ``evalkit.testing``'s hand-made folders all use these
models, so a field means the same thing everywhere.

Every file is standard JSON: a non-finite float (a NaN stderr of a one-item group) is written as
``null``. A folder written by another schema version is refused with one line naming both
versions; there is no older version to migrate from yet (version 1 is the first).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from evalkit.atomic import write_text_atomic
from evalkit.errors import EvalkitError

SCHEMA_VERSION = 1
RUN_JSON, SAMPLES_JSONL, METRICS_JSON = "run.json", "samples.jsonl", "metrics.json"

# Task versions are strings ("3.0"); YAML may hand over a float.
_Str = Annotated[str, BeforeValidator(lambda v: v if v is None else str(v))]


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


_Finite = Annotated[float | None, AfterValidator(_finite_or_none)]


class TaskInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    version: _Str
    spec_hash: str | None = None
    prompt_template_hash: str | None = None
    chat_template_hash: str | None = None
    file: str | None = None


class CheckpointInfo(BaseModel):
    """Which checkpoint produced a run (``Checkpoint.describe()``)."""

    model_config = ConfigDict(extra="allow")
    spec: str | None = None
    name: str | None = None
    kind: str | None = None
    source: str | None = None
    path: str | None = None
    fingerprint: str | None = None
    base_fingerprint: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.spec or (self.fingerprint or "?")[:12]


class RunHeader(BaseModel):
    """``run.json``. ``status`` is "running" until metrics.json exists."""

    model_config = ConfigDict(extra="allow")
    schema_version: int = SCHEMA_VERSION
    status: str = "running"
    run_key: str | None = None
    task: TaskInfo
    checkpoint: CheckpointInfo = Field(default_factory=CheckpointInfo)
    backend: dict[str, Any] = Field(default_factory=dict)
    generation: dict[str, Any]
    seed: int | None = None
    limit: int | None = None
    data_dir: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    hardware: dict[str, Any] | None = None  # machine, platform, cpus, gpu (results store)
    timings: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    judge: dict[str, Any] | None = None  # added by ``--judge`` (evalkit.run.judge)


class Sample(BaseModel):
    """One line of ``samples.jsonl``: one scored sample of one item."""

    model_config = ConfigDict(extra="forbid")
    doc_id: str
    sample_idx: int
    prompt_hash: str
    prompt: str
    target: Any = None
    completion: str
    finish_reason: str | None = None
    n_prompt_tokens: int | None = None
    n_completion_tokens: int | None = None
    extracted: dict[str, Any] | None = None
    # Every score is a number: an unscorable sample (sandbox_error) stops the run instead.
    scores: dict[str, float]
    execution: dict[str, Any] | None = None
    loglikelihoods: list[dict[str, Any]] | None = None  # loglikelihood tasks only
    # lm_eval:NAME tasks only (evalkit.run.lm_eval_format): lm-eval's own per-sample record.
    doc_hash: str | None = None
    target_hash: str | None = None
    filtered_resps: dict[str, Any] | None = None
    lm_eval: dict[str, Any] | None = None

    def line(self) -> str:
        """The JSON line (without newline); the optional fields only where they are set."""
        return self.model_dump_json(exclude={f for f in _OPTIONAL if getattr(self, f) is None})


_OPTIONAL = ("loglikelihoods", "doc_hash", "target_hash", "filtered_resps", "lm_eval")


class MetricValue(BaseModel):
    """One entry of metrics.json's ``metrics``."""

    model_config = ConfigDict(extra="allow")
    value: _Finite
    stderr: _Finite = None
    n: int
    aggregation: str  # "mean" | "pass@k" (per item); "corpus" | "group" | "macro" (summaries)
    score_key: str
    k: int | None = None
    higher_is_better: bool = True


class MetricsFile(BaseModel):
    """``metrics.json``."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    task: str
    metrics: dict[str, MetricValue]


class Run(BaseModel):
    """A finished run folder, read and validated."""

    path: Path
    header: RunHeader
    samples: list[Sample]
    metrics: MetricsFile

    def dicts(self) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        """(run.json, samples, metrics.json) as the plain JSON they are on disk (scripts, tests)."""
        return (json.loads(self.header.model_dump_json()),
                [json.loads(s.line()) for s in self.samples],
                json.loads(self.metrics.model_dump_json()))


def first_error(exc: ValidationError) -> str:
    """A pydantic error's first problem, as "field.path: message" for a one-line refusal."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "top level"
    return f"{loc}: {err['msg']}"


def read_json(path: Path) -> Any:
    """A JSON file's content; a missing or malformed file is one line naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalkitError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalkitError(f"{path} is not valid JSON ({exc})") from None


def _check_version(folder: Path, raw: Any) -> None:
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise EvalkitError(f"{folder}: run format version {version} is not supported (this "
                           f"evalkit reads version {SCHEMA_VERSION}); rerun its `evalkit run` "
                           "command with this evalkit to rewrite it")


def read_header(folder: Path) -> RunHeader:
    """``run.json`` of a run folder (finished or not)."""
    return _read_model(folder, RUN_JSON, RunHeader)


def read_metrics(folder: Path) -> MetricsFile:
    """``metrics.json`` of a run folder, without reading its samples."""
    return _read_model(folder, METRICS_JSON, MetricsFile)


_M = TypeVar("_M", bound=BaseModel)


def _read_model(folder: Path, name: str, model: type[_M]) -> _M:
    raw = read_json(folder / name)
    _check_version(folder, raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise EvalkitError(f"{folder}: malformed {name} ({first_error(exc)})") from None


def write_header(folder: Path, header: RunHeader) -> None:
    write_text_atomic(folder / RUN_JSON, header.model_dump_json(indent=2) + "\n")


def write_metrics(folder: Path, metrics: MetricsFile) -> None:
    write_text_atomic(folder / METRICS_JSON, metrics.model_dump_json(indent=2) + "\n")


def write_samples(folder: Path, samples: list[Sample]) -> None:
    """Replace samples.jsonl at once (the judge pass rewrites scored samples; a finished run
    rewrites them in doc order)."""
    write_text_atomic(folder / SAMPLES_JSONL, "".join(s.line() + "\n" for s in samples))


def _parse_sample(line: bytes | str, where: str) -> Sample:
    try:
        return Sample.model_validate_json(line)
    except ValidationError as exc:
        raise EvalkitError(f"{where} is not a valid sample record ({first_error(exc)})") from None


def repair_samples(folder: Path) -> list[Sample]:
    """Read samples.jsonl of a run being resumed: cut a torn last line off the file, and keep
    the first of duplicated (doc_id, sample_idx) records."""
    f = folder / SAMPLES_JSONL
    if not f.exists():
        return []
    data = f.read_bytes()
    good_end = data.rfind(b"\n") + 1
    records, seen, offset = [], set(), 0
    for line in data[:good_end].splitlines(keepends=True):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            break  # a torn write inside the file: keep what precedes it
        rec = _parse_sample(line, f"{f}: byte {offset}")
        offset += len(line)
        if (rec.doc_id, rec.sample_idx) not in seen:
            seen.add((rec.doc_id, rec.sample_idx))
            records.append(rec)
    if offset != len(data):
        with f.open("r+b") as fh:
            fh.truncate(offset)
    return records


def iter_samples(folder: Path) -> Iterator[Sample]:
    """The samples of a finished run, in file order (a bad line is an error, not a cut)."""
    f = folder / SAMPLES_JSONL
    try:
        lines = f.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalkitError(f"{folder} has no {SAMPLES_JSONL}; the run folder is incomplete"
                           ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"{f} cannot be read as UTF-8 text ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield _parse_sample(line, f"{f}:{number}")


def load_run(path: str | Path) -> Run:
    """A finished run; refuses a folder that is still running, was killed, or is not a run."""
    folder = Path(path)
    if not folder.is_dir():
        raise EvalkitError(f"{folder} is not a run folder (no such directory)")
    if not (folder / RUN_JSON).exists():
        raise EvalkitError(f"{folder} is not a run folder (no {RUN_JSON})")
    raw = read_json(folder / RUN_JSON)
    status = raw.get("status") if isinstance(raw, dict) else None
    if status != "complete" or not (folder / METRICS_JSON).exists():
        state = f"status '{status}'" if status != "complete" else f"no {METRICS_JSON}"
        raise EvalkitError(f"{folder} is not a finished run ({state}); rerun the same "
                           "`evalkit run` command to finish it")
    if raw.get("shard"):  # one shard's items are not the run's: results would be wrong
        shard = raw["shard"]
        raise EvalkitError(f"{folder} is shard {shard.get('index')}/{shard.get('count')} of a "
                           "run; join the shards with `evalkit merge` first")
    header = read_header(folder)
    metrics = read_metrics(folder)
    return Run(path=folder, header=header, samples=list(iter_samples(folder)), metrics=metrics)
