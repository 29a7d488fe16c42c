"""Where task files are found: the user's folders, installed packages' and evalkit's ``tasks/``."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from evalkit.paths import resource_dir
from evalkit.plugins import task_folders


def task_dirs() -> list[Path]:
    """``EVALKIT_TASKS_PATH``'s folders, then installed packages' (entry points in group
    ``evalkit.tasks``), then evalkit's own; the first file of a name wins."""
    extra = [Path(p) for p in os.environ.get("EVALKIT_TASKS_PATH", "").split(os.pathsep) if p]
    return [*extra, *task_folders(), resource_dir("tasks")]


@cache
def _index(dirs: tuple[Path, ...]) -> dict[str, Path]:
    """name -> file; a file's name is its stem (the `name:` inside must agree). Files whose
    name starts with ``_`` are bases other files ``extends:``, not tasks."""
    found: dict[str, Path] = {}
    for d in dirs:
        for f in sorted(d.rglob("*.yaml")) if d.exists() else []:
            if not f.name.startswith("_"):
                found.setdefault(f.stem, f)
    return found


def list_tasks() -> dict[str, Path]:
    return dict(sorted(_index(tuple(task_dirs())).items()))
