"""User code that task files name, found without editing evalkit: ``module:function``
references (the module next to the task file, else importable) and the installed packages'
entry points (groups ``evalkit.scorers`` and ``evalkit.tasks``). See docs/tasks.md."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from evalkit.errors import EvalkitError

SCORERS_GROUP = "evalkit.scorers"
TASKS_GROUP = "evalkit.tasks"


def import_ref(ref: str, near: Path | None = None) -> Any:
    """The object ``"package.module:name"`` names. A module file beside ``near`` (a task
    file) is loaded from there first, so helpers can sit next to the YAML that uses them."""
    module_name, sep, attr = ref.partition(":")
    where = f"task file {near}: " if near else ""
    if not sep or not module_name or not attr:
        raise EvalkitError(f"{where}'{ref}' is not of the form module:function")
    try:
        local = near.parent.joinpath(*module_name.split(".")).with_suffix(".py") if near else None
        module = (_module_from_file(local) if local is not None and local.is_file()
                  else importlib.import_module(module_name))
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise EvalkitError(f"{where}cannot import '{ref}': {exc}") from None


def _module_from_file(path: Path) -> ModuleType:
    # A name unique to the file: two task folders may both hold a `helpers.py`.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"evalkit_local_{digest}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def entry_point_names(group: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group))


def load_entry_point(group: str, name: str) -> Any | None:
    """The object the installed entry point ``name`` of ``group`` names (None: there is none)."""
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    return _load(found[0]) if found else None


def task_folders() -> list[Path]:
    """The folders that installed packages offer task files in (group ``evalkit.tasks``): the
    entry point names a package (its folder), or a path, or a function returning one."""
    folders = []
    for ep in sorted(entry_points(group=TASKS_GROUP), key=lambda e: e.name):
        obj = _load(ep)
        if callable(obj) and not isinstance(obj, ModuleType):
            obj = obj()
        if isinstance(obj, ModuleType):
            if not getattr(obj, "__file__", None):
                raise EvalkitError(f"entry point {TASKS_GROUP}:{ep.name} names a package "
                                   "without files")
            obj = Path(obj.__file__).parent  # type: ignore[arg-type]
        if not isinstance(obj, str | Path):
            raise EvalkitError(f"entry point {TASKS_GROUP}:{ep.name} = {ep.value} gives "
                               f"{type(obj).__name__}, not a folder")
        folders.append(Path(obj))
    return folders


def _load(ep: EntryPoint) -> Any:
    try:
        return ep.load()
    except Exception as exc:  # a broken plug-in is the user's input: one line, not a traceback
        raise EvalkitError(f"entry point {ep.group}:{ep.name} = {ep.value} does not load: "
                           f"{type(exc).__name__}: {exc}") from None
