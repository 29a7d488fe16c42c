"""Standard JSON only: NaN and infinities become ``null`` (RFC 8259 has no NaN).

Python's ``json`` writes a bare ``NaN`` by default, which ``jq``, JavaScript and strict parsers
reject. JSON that evalkit writes from plain dicts goes through ``dumps``; files written from
pydantic models (run folders, comparison.json, results records) get the same from pydantic,
which writes a non-finite float as ``null``. A writer that knows *why* a value is missing (e.g.
no standard error for a corpus metric) stores the reason next to the ``null``.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (at any depth) replaced by ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if hasattr(obj, "dtype") and getattr(obj, "ndim", None) == 0:  # numpy scalars
        return finite(obj.item())
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that can only produce standard JSON (``allow_nan=False`` after ``finite``)."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
