"""One random stream per reported row, so a row's CI and p-value do not depend on which other
tasks or metrics happen to be in the same comparison."""

from __future__ import annotations

import hashlib

import numpy as np


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def row_rng(seed: int, *labels: str) -> np.random.Generator:
    """A generator seeded from ``seed`` and the row's labels (e.g. task and metric)."""
    return np.random.default_rng([seed, *(_stable_int(label) for label in labels)])
