"""Answer extraction and normalization, reproducing lm-evaluation-harness exactly.

- ``regex_extract`` = lm-eval's ``regex`` filter followed by ``take_first``.
- ``normalize`` = the preprocessing of lm-eval's ``exact_match`` metric (HF ``evaluate``'s).
Published GSM8K numbers depend on these details; tests compare them with lm-eval itself.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

INVALID = "[invalid]"


@lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def regex_extract(text: str, pattern: str, group_select: int = 0, fallback: str = INVALID) -> str:
    """All matches of ``pattern``; keep match number ``group_select`` (0 first, -1 last).

    When the pattern has several groups a match is a tuple: take its first non-empty group.
    """
    matches = _compile(pattern).findall(text if isinstance(text, str) else "")
    if not matches:
        return fallback
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), fallback)
    return match.strip()


def normalize(text: str, regexes_to_ignore: tuple[str, ...] = (), ignore_case: bool = False,
              ignore_punctuation: bool = False) -> str:
    """Apply each ignore-regex in order, then case and punctuation folding."""
    for pattern in regexes_to_ignore:
        text = re.sub(pattern, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(str.maketrans("", "", string.punctuation))
    return text
