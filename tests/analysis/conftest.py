"""Analyzer tests: keep the base-SVD cache per test, so a cached entry never hides a bug."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_svd_cache(tmp_path, monkeypatch):
    root = tmp_path / "analysis-cache"
    monkeypatch.setattr("evalkit.analysis.weightspace.cache_dir", lambda: root)
    return root / "svd"
