"""`compare --tuco` puts each task's mean TuCo next to its accuracy deltas (issue: analyzers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import make_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # two compare runs through the CLI (~1 min)


def _compare(base: Path, tuned: Path, tmp_path: Path, name: str) -> dict:
    out = tmp_path / name
    result = subprocess.run(
        [sys.executable, "-m", "evalkit", "compare", str(base), str(tuned), "--tasks", "gsm8k",
         "--limit", "3", "--max-tokens", "8", "--backend", "hf", "--tuco", "--allow-same",
         "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--resamples", "1000"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TuCo" in result.stdout
    assert "TuCo |" in (out / "comparison.md").read_text()
    return json.loads((out / "comparison.json").read_text())


def test_compare_reports_the_tasks_mean_tuco(tmp_path, tiny_llama, builtin_model, data_dir):
    from evalkit.analysis.tuco import task_tuco
    from evalkit.checkpoints import resolve

    other = make_tiny_llama(tmp_path / "other", seed=1, tokenizer_from=builtin_model.path)
    tuco = _compare(tiny_llama, other, tmp_path, "pair")["tuco"]
    direct = task_tuco(resolve(str(tiny_llama)), resolve(str(other)), "gsm8k", limit=3,
                       progress=False).summary
    assert tuco["gsm8k"]["n"] == 3
    assert tuco["gsm8k"]["mean"] == direct.mean and 0 < direct.mean <= 1
    # The oracle: a model compared with itself has no tuning contribution.
    assert _compare(tiny_llama, tiny_llama, tmp_path, "self")["tuco"]["gsm8k"]["mean"] == 0
