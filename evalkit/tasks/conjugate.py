"""Conjugate prompting's task side: transforms that ask a task's items in another way.

Kotha et al. (2023, "Understanding catastrophic forgetting in language models via implicit
inference") show that fine-tuning can make a model infer "this is the fine-tuning task" and
suppress abilities it still has; a *conjugate* prompt (same items, asked in a way far from the
fine-tuning data, e.g. translated) brings them back. A conjugate task is an ordinary task whose
file says ``conjugate: {of: <plain task>, transform: <name>}``; it inherits the plain task's
fields and asks the same items (same doc ids) differently. The statistics (recovery) live in
``evalkit.compare.recovery``.

Transforms (``transform:``) rewrite the docs; register more with ``@register_conjugate``:

- ``format``: nothing to rewrite, the conjugate file's own prompt fields are the new format;
- ``translate``: fields replaced from a user-supplied JSONL (``file:``, relative to the data dir
  or absolute), one object per doc: ``{"doc_id": ..., "<field>": <translated value>, ...}``;
  docs without a line are left out (so are their pairs in the recovery).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.errors import EvalkitError
from evalkit.tasks.data import Doc

if TYPE_CHECKING:

    from evalkit.tasks.task import Task

Transform = Callable[[list[Doc], dict, "Task"], list[Doc]]
TRANSFORMS: dict[str, Transform] = {}


def register_conjugate(name: str):
    """Register ``transform(docs, config, task) -> docs`` under ``name``."""

    def deco(fn: Transform) -> Transform:
        TRANSFORMS[name] = fn
        return fn

    return deco


def apply_conjugate(task: Task, docs: list[Doc]) -> list[Doc]:
    spec = task.spec.conjugate
    if spec is None:
        return docs
    if spec.transform not in TRANSFORMS:
        raise EvalkitError(f"task {task.name}: unknown conjugate transform '{spec.transform}' "
                           f"(known: {', '.join(sorted(TRANSFORMS))})")
    return TRANSFORMS[spec.transform](docs, dict(spec.model_extra or {}), task)


@register_conjugate("format")
def _format(docs: list[Doc], config: dict, task: Task) -> list[Doc]:
    return docs


@register_conjugate("translate")
def _translate(docs: list[Doc], config: dict, task: Task) -> list[Doc]:
    if not config.get("file"):
        raise EvalkitError(f"task {task.name}: the translate transform needs `file:` (a JSONL "
                           "of {\"doc_id\": ..., <field>: <translation>})")
    path = Path(str(config["file"])).expanduser()
    if not path.is_absolute():
        path = (task.data_dir or task.path.parent) / path
    if not path.exists():
        raise EvalkitError(f"task {task.name}: translation file {path} not found")
    translated: dict[str, dict] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            translated[str(row.pop("doc_id"))] = row
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise EvalkitError(f"{path}:{n} is not a JSON object with a doc_id") from None
    kept = [Doc(d.id, d.index, {**d.data, **translated[d.id]}) for d in docs
            if d.id in translated]
    if not kept:
        raise EvalkitError(f"task {task.name}: no doc id of {path} is a doc of the task")
    return kept
