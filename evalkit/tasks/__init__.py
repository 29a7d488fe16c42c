"""The task registry: task files in ``tasks/`` (and user folders) looked up by name.

A task is a YAML file (see ``evalkit/tasks/spec.py``) plus, for odd data or scoring, a few
functions it references as ``module:function`` (a module next to the file, or importable).
Users add folders with ``EVALKIT_TASKS_PATH`` (``os.pathsep``-separated), installed packages
add theirs through ``evalkit.tasks`` entry points, or a path to a ``.yaml`` file is the task
name (docs/tasks.md).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import data_dir as resolve_data_dir
from evalkit.tasks.data import Doc
from evalkit.tasks.files import _index, list_tasks, task_dirs
from evalkit.tasks.spec import load_spec
from evalkit.tasks.task import Task

__all__ = ["Doc", "Task", "check_task", "list_tasks", "load_task", "task_dirs"]


def load_task(name: str, data_dir: str | Path | None = None) -> Task:
    """Load a task by name (or from a .yaml path) with its data source resolved."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise EvalkitError(f"task file not found: {path}")
        return Task(load_spec(path), path.resolve(), resolve_data_dir(data_dir))
    index = _index(tuple(task_dirs()))
    if name not in index:
        close = difflib.get_close_matches(name, index, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EvalkitError(f"unknown task '{name}'{hint} (`evalkit tasks` lists them)")
    path = index[name]
    spec = load_spec(path)
    if spec.name != name:
        raise EvalkitError(f"malformed task file {path}: field 'name': '{spec.name}' does not "
                           f"match the file name '{name}'")
    return Task(spec, path, resolve_data_dir(data_dir))


def check_task(name: str, data_dir: str | Path | None = None, limit: int | None = None) -> None:
    """Load a task and its documents (an ``lm_eval:`` task through lm-eval), so a bad name or
    missing data fails before any model loads."""
    if name.startswith("lm_eval:"):
        from evalkit.tasks.lm_eval import check_task as check_lm_eval_task

        check_lm_eval_task(name, limit)
        return
    load_task(name, data_dir).docs(limit)
