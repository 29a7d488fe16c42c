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


def writable_folder(path: Path, option: str) -> Path:
    """Prove a file can be written in ``path``, so that a bad output folder (a file, read-only,
    under /proc, a full disk) fails in a second, not after the work. Folders made for the probe
    are removed again: a command refused later for bad input leaves nothing behind."""
    import tempfile

    from evalkit.errors import EvalkitError

    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path) as probe:
            probe.write(b"0")
            probe.flush()
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise EvalkitError(f"{option} {path} is not a writable folder: {reason}") from None
    finally:
        for folder in made:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
    return path
