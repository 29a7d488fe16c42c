"""The whole path on real checkpoints: `evalkit compare --publish` of two tiny random llamas
(hf backend, a few GSM8K items), then `evalkit report` over the store and the compare folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import make_tiny_llama

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_compare_publish_then_report(tmp_path, tiny_llama, builtin_model):
    from evalkit.report.store import ComparisonRecord, RunRecord, read_store

    other = make_tiny_llama(tmp_path / "tiny-other", seed=1, tokenizer_from=builtin_model.path)
    cmd = [sys.executable, "-m", "evalkit", "compare", str(tiny_llama), str(other),
           "--tasks", "gsm8k", "--limit", "3", "--max-tokens", "8", "--backend", "hf",
           "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "cmp"),
           "--publish", str(tmp_path / "results")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("published") == 3
    records = read_store(tmp_path / "results")
    runs = [r for r in records if isinstance(r, RunRecord)]
    cmp = next(r for r in records if isinstance(r, ComparisonRecord))
    for rec in runs:  # each record says what its run folder says
        run = json.loads((Path(rec.run_dir) / "run.json").read_text())
        metrics = json.loads((Path(rec.run_dir) / "metrics.json").read_text())["metrics"]
        assert rec.checkpoint.fingerprint == run["checkpoint"]["fingerprint"]
        assert rec.task.version == str(run["task"]["version"]) and rec.limit == 3
        assert {k: v.value for k, v in rec.metrics.items()} == {k: v["value"]
                                                                for k, v in metrics.items()}
        assert rec.hardware and rec.hardware["cpus"] >= 1
    assert {cmp.base.fingerprint, cmp.tuned.fingerprint} == {r.checkpoint.fingerprint
                                                             for r in runs}
    rep = subprocess.run([sys.executable, "-m", "evalkit", "report", str(tmp_path / "results"),
                          str(tmp_path / "cmp"), "-o", str(tmp_path / "rep")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert "| gsm8k |" in rep.stdout and (tmp_path / "rep/index.html").stat().st_size > 0
