"""Suites: a name that stands for several tasks, with per-task default --limit.

Defined in ``suites.yml`` in a task folder (``tasks/suites.yml``; not ``.yaml``, which would
be a task; user folders from ``EVALKIT_TASKS_PATH`` come first). ``expand_tasks(["forgetting",
"gsm8k"])`` gives the task names in order, without duplicates, and the suites' default limits.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from evalkit.errors import EvalkitError


def suites() -> dict[str, dict]:
    """name -> {"description": str, "tasks": {task or suite: limit or None}}."""
    from evalkit.tasks.files import task_dirs

    found: dict[str, dict] = {}
    for d in task_dirs():
        path = Path(d) / "suites.yml"
        if not path.exists():
            continue
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise EvalkitError(f"malformed suites file {path}: {exc}") from None
        for name, suite in data.items():
            tasks = suite.get("tasks") if isinstance(suite, dict) else None
            if not isinstance(tasks, dict) or not all(
                    v is None or (isinstance(v, int) and v > 0) for v in tasks.values()):
                raise EvalkitError(f"malformed suites file {path}: suite '{name}' needs "
                                   "`tasks:` mapping task names to a positive limit or null")
            found.setdefault(name, {"description": suite.get("description", ""),
                                    "tasks": tasks})
    return found


def expand_tasks(names: list[str]) -> tuple[list[str], dict[str, int]]:
    """Task names with suites expanded (in order, first occurrence kept) and the suites'
    default limits."""
    known = suites()
    tasks: list[str] = []
    limits: dict[str, int] = {}

    def add(name: str, limit: int | None, path: tuple[str, ...]) -> None:
        if name.startswith("lm_eval:") and name not in tasks:  # a group: its leaf tasks
            from evalkit.tasks.lm_eval import expand

            leaves = expand(name)
            if leaves != [name]:
                for leaf in leaves:
                    add(leaf, limit, path)
                return
        if name in known:
            if name in path:
                raise EvalkitError(f"suite '{name}' includes itself ({' -> '.join(path)})")
            for task, task_limit in known[name]["tasks"].items():
                add(task, task_limit, (*path, name))
            return
        if name not in tasks:
            tasks.append(name)
            if limit is not None:
                limits[name] = limit

    for n in names:
        add(n, None, ())
    return tasks, limits
