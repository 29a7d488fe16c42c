"""Write a file so that a reader sees all of it or nothing (temp file + rename)."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from evalkit import strict_json


def write_text_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` atomically: a killed writer leaves the old file (and at
    worst a hidden temp file), never a half-written one; concurrent writers never interleave."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files share its mode
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, obj: object, *, indent: int | None = 2) -> None:
    """``obj`` as standard JSON (NaN and infinities written as null), atomically."""
    write_text_atomic(path, strict_json.dumps(obj, indent=indent, default=str) + "\n")
