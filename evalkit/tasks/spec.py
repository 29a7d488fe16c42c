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
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise EvalkitError(f"malformed task file {path}{where}: {getattr(exc, 'problem', exc)}"
                           ) from None
    if not isinstance(data, dict):
        raise EvalkitError(f"malformed task file {path}: expected a mapping of fields")
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
    plain = path.parent / f"{name}.yaml"
    if not plain.exists():
        from evalkit.tasks.files import list_tasks

        plain = list_tasks().get(name, plain)
    if not plain.exists():
        raise EvalkitError(f"malformed task file {path}: field 'conjugate.of': no task '{name}'")
    if plain.resolve() == path.resolve():
        raise EvalkitError(f"malformed task file {path}: field 'conjugate.of': names itself")
    data = yaml.safe_load(plain.read_text())
    if not isinstance(data, dict):
        raise EvalkitError(f"malformed task file {plain}: expected a mapping of fields")
    data.pop("conjugate", None)
    return data
