"""Write a file so that a reader sees all of it or nothing (temp file + rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` atomically: a killed writer leaves the old file (and at
    worst a hidden temp file), never a half-written one; concurrent writers never interleave."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: object, *, indent: int | None = 2) -> None:
    """``obj`` as standard JSON (NaN refused, not written), atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, default=str, allow_nan=False) + "\n")
