"""Rewriting what the generation cache holds, so a test can serve a run hand-written replies
through the real cache (and show that the run read them from there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.run.store import GenerationCache


def cached_completions(cache_dir: Path) -> dict[str, dict[str, Any]]:
    """Every cached request's first completion, by cache key."""
    cache = GenerationCache(cache_dir / "generations.sqlite")
    try:
        keys = [row[0] for row in cache.db.execute("SELECT key FROM gen")]
        return {k: (cache.get(k) or [{}])[0] for k in keys}
    finally:
        cache.close()


def replace_cached_text(cache_dir: Path, texts: dict[str, str]) -> None:
    """Make the cached completion of each key in ``texts`` say that text instead."""
    cache = GenerationCache(cache_dir / "generations.sqlite")
    try:
        for key, text in texts.items():
            completions = cache.get(key)
            assert completions, f"{key} is not in the cache"
            cache.put(key, [{**c, "text": text} for c in completions])
    finally:
        cache.close()
