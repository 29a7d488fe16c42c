"""Where evalkit keeps its cache and finds benchmark data."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_dir() -> Path:
    """Root of evalkit's cache (converted models, hashes, generations, analyzer SVDs)."""
    root = os.environ.get("EVALKIT_CACHE_DIR")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "evalkit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(explicit: str | Path | None = None) -> Path | None:
    """The local benchmark data folder: ``--data-dir`` first, then ``EVALKIT_DATA_DIR``.

    ``None`` means "no local data": loaders then go to the Hugging Face hub.
    """
    value = explicit if explicit is not None else os.environ.get("EVALKIT_DATA_DIR")
    return Path(value).expanduser().resolve() if value else None


def project_root() -> Path:
    """The source checkout (``tasks/``, ``sandbox/`` and ``results/`` live here)."""
    return Path(__file__).resolve().parent.parent


def resource_dir(name: str) -> Path:
    """``tasks`` or ``sandbox``: the checkout's folder (a source tree or an editable install),
    else the copy a wheel installs under ``<prefix>/share/evalkit`` (pyproject's data-files)."""
    for root in (project_root(), Path(sys.prefix) / "share" / "evalkit"):
        if (root / name).is_dir():
            return root / name
    return project_root() / name
