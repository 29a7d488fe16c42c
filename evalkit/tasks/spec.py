"""The schema of a declarative task file (``tasks/*.yaml``), validated with pydantic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evalkit.errors import EvalkitError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitSpec(_Strict):
    file: str | None = None  # path under the data dir
    hub_split: str | None = None  # defaults to the split's name
    process: str | None = None  # "module:function" applied to the records (list -> list)


class HubSpec(_Strict):
    path: str
    name: str | None = None


class DatasetSpec(_Strict):
    hub: HubSpec | None = None
    splits: dict[str, SplitSpec]
    loader: str | None = None  # "module:function(split, data_dir) -> records" for odd sources


class FewShotSpec(_Strict):
    n: int = Field(0, ge=0)
    split: str | None = None
    sampler: Literal["random", "first_n"] = "random"
    seed: int = 1234
    delimiter: str = "\n\n"  # between shots
    target_delimiter: str = " "  # between a shot's question and answer
    multiturn: bool = True  # chat tasks: shots as user/assistant turns


class GenerationSpec(_Strict):
    until: list[str] = []
    max_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, gt=0)


class ConjugateSpec(BaseModel):
    """This task asks the items of task ``of`` in another way (conjugate prompting): fields
    this file leaves out are taken from ``of``'s file. ``transform`` names a registered doc
    transform (``evalkit.tasks.conjugate``); the rest is that transform's configuration."""

    model_config = ConfigDict(extra="allow")
    of: str
    transform: str = "format"


class ScorerSpec(BaseModel):
    model_config = ConfigDict(extra="allow")  # the rest is the scorer's own config
    name: str


class TaskSpec(_Strict):
    name: str
    version: str
    description: str = ""
    dataset: DatasetSpec
    split: str
    doc_id: str | None = None  # template for a stable id; default: index in the split
    prompt: str  # jinja2 template over the doc's fields
    target: str  # jinja2 template: the gold answer (and a shot's answer)
    instruction: str | None = None  # rendered text before the shots (lm-eval's `description`)
    system: str | None = None  # chat tasks: a system message
    chat: bool = False  # render through the model's chat template (a named variant)
    fewshot: FewShotSpec = FewShotSpec()
    generation: GenerationSpec = GenerationSpec()
    scorer: ScorerSpec
    # What the model is asked for: generated text, the loglikelihood of each of `choices` after
    # the prompt (the target is the right choice's index or text), or the loglikelihood of the
    # target text itself in windows (perplexity). lm-eval's output types.
    output_type: Literal["generate_until", "multiple_choice", "loglikelihood_rolling"] = (
        "generate_until")
    choices: list[str] | str | None = None  # a list, or a template rendering to a list
    max_length: int | None = Field(None, gt=1)  # loglikelihood: tokens the model sees at once
    # A doc field that splits the split into groups (MMLU's subjects): --limit, few-shot shots
    # and per-group metrics are taken per group, as lm-eval's task groups do per subtask.
    group_by: str | None = None
    conjugate: ConjugateSpec | None = None

    def spec_hash(self) -> str:
        return _hash(_without_defaults(self.model_dump(mode="json")))

    def prompt_template_hash(self) -> str:
        """Everything that shapes the prompt text (not generation or scoring)."""
        return _hash(_without_defaults({
            "prompt": self.prompt, "target": self.target, "system": self.system,
            "instruction": self.instruction,
            "chat": self.chat, "fewshot": self.fewshot.model_dump(mode="json"),
            "output_type": self.output_type, "choices": self.choices,
            "group_by": self.group_by,
            "conjugate": self.conjugate.model_dump(mode="json") if self.conjugate else None}))


# Fields added after tasks were first run: left out of the hashes while at their defaults, so
# existing tasks keep their run keys and caches.
_LATER_DEFAULTS = {"output_type": "generate_until", "choices": None, "max_length": None,
                   "group_by": None, "conjugate": None}


def _without_defaults(data: dict) -> dict:
    return {k: v for k, v in data.items()
            if not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])}


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def load_spec(path: Path) -> TaskSpec:
    """Parse and validate a task file; errors name the file and the offending field."""
    data = read_fields(path)
    if isinstance(data.get("conjugate"), dict) and data["conjugate"].get("of"):
        data = {**_plain_task_fields(path, str(data["conjugate"]["of"])), **data}
    try:
        spec = TaskSpec(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise EvalkitError(f"malformed task file {path}: field '{field}': {err['msg']}") from None
    if spec.split not in spec.dataset.splits:
        raise EvalkitError(f"malformed task file {path}: field 'split': '{spec.split}' is not "
                           f"one of dataset.splits ({', '.join(spec.dataset.splits)})")
    if spec.output_type == "multiple_choice" and not spec.choices:
        raise EvalkitError(f"malformed task file {path}: field 'choices': required when "
                           "output_type is multiple_choice")
    if spec.fewshot.n and spec.fewshot.split not in spec.dataset.splits:
        raise EvalkitError(f"malformed task file {path}: field 'fewshot.split': must name one "
                           f"of dataset.splits when fewshot.n > 0")
    return spec


def _plain_task_fields(path: Path, name: str) -> dict:
    """The fields of the task a conjugate task is a variant of (next to it, else by name)."""
    plain = _task_file(path, name, "conjugate.of")
    data = read_fields(plain)
    data.pop("conjugate", None)
    return data


def read_fields(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A task file's fields with its ``extends:`` chain merged in: the file names a base file
    (a path relative to it, or a task's name) and overrides fields of it; mappings merge key by
    key, anything else is replaced. Base files whose name starts with ``_`` are not tasks."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise EvalkitError(f"malformed task file {path}{where}: {getattr(exc, 'problem', exc)}"
                           ) from None
    except OSError as exc:
        raise EvalkitError(f"cannot read task file {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise EvalkitError(f"malformed task file {path}: expected a mapping of fields")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise EvalkitError(f"malformed task file {path}: field 'extends': expected a file or "
                           "task name")
    base_path = _task_file(path, base, "extends")
    if base_path.resolve() in _seen:
        raise EvalkitError(f"malformed task file {path}: field 'extends': '{base}' extends "
                           "itself (a cycle)")
    return _merge(read_fields(base_path, (*_seen, path.resolve())), data)


def _task_file(path: Path, ref: str, field: str) -> Path:
    """A file named by a task file: a path relative to it, else a task's name."""
    candidates = [path.parent / ref] if ref.endswith((".yaml", ".yml")) else [
        path.parent / f"{ref}.yaml"]
    if not ref.endswith((".yaml", ".yml")):
        from evalkit.tasks.files import list_tasks

        if ref in list_tasks():
            candidates.append(list_tasks()[ref])
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise EvalkitError(f"malformed task file {path}: field '{field}': no task '{ref}'")
    if found.resolve() == path.resolve():
        raise EvalkitError(f"malformed task file {path}: field '{field}': names itself")
    return found


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
