"""Every JSON file that run, compare, check and analyze write is standard JSON (no NaN)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from evalkit import strict_json
from evalkit.testing import make_run_folder

ROOT = Path(__file__).resolve().parent


def _refuse(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def strict_load_all(folder: Path) -> int:
    """Parse every .json / .jsonl under ``folder`` refusing NaN/Infinity; returns the count."""
    count = 0
    for path in sorted(folder.rglob("*.json*")):
        if path.suffix not in (".json", ".jsonl") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines() if path.suffix == ".jsonl" else [text]
        for line in lines:
            if line.strip():
                json.loads(line, parse_constant=_refuse)
        count += 1
    return count


def _cli(*args: object) -> int:
    from evalkit.cli import main

    old = sys.argv
    sys.argv = ["evalkit", *map(str, args)]
    try:
        main()
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = old


def test_strict_dumps_turns_non_finite_numbers_into_null():
    import numpy as np

    text = strict_json.dumps({"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}],
                              "d": np.float64("nan"), "e": (2.5,)})
    assert json.loads(text, parse_constant=_refuse) == {"a": None, "b": [1.0, None, {"c": None}],
                                                        "d": None, "e": [2.5]}


def test_summary_metrics_store_null_with_the_reason():
    from evalkit.scoring.loglikelihood import group_metrics, summary

    corpus = summary(3.2, 10, "corpus", "logprob", higher_is_better=False)
    assert corpus["stderr"] is None and "no per-item standard error" in corpus["stderr_note"]
    metrics = {"acc": {"aggregation": "mean", "score_key": "acc", "higher_is_better": True}}
    samples = [{"doc_id": d, "scores": {"acc": v}} for d, v in
               (("x1", 1.0), ("x2", 0.0), ("y1", 1.0))]
    out = group_metrics(metrics, samples, lambda d: d[0])
    assert out["acc,y"]["stderr"] is None and "one item" in out["acc,y"]["stderr_note"]
    assert out["acc,x"]["stderr"] == pytest.approx(0.5)
    assert out["acc,macro"]["stderr"] is None and "stderr_note" in out["acc,macro"]
    json.loads(strict_json.dumps(out), parse_constant=_refuse)


def test_run_writer_never_writes_nan(tmp_path):
    from evalkit.atomic import write_json_atomic

    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"metrics": {"ppl": {"value": 3.0, "stderr": math.nan}}})
    assert json.loads(path.read_text(), parse_constant=_refuse)["metrics"]["ppl"]["stderr"] is None


def test_run_compare_check_analyze_outputs_are_standard_json(tmp_path, tiny_llama, monkeypatch):
    from evalkit.checkpoints import resolve
    from evalkit.run.runner import RunOptions, run_task

    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    # run: a real (tiny) model through the hf backend.
    folder = run_task(resolve(tiny_llama), "gsm8k",
                      RunOptions(backend="hf", limit=3, max_tokens=8, out_dir=tmp_path / "runs",
                                 progress=False))
    assert strict_load_all(folder) == 3  # run.json, metrics.json, samples.jsonl
    # compare + check on run folders (the same run against a copy of itself).
    other = tmp_path / "copy" / folder.name
    shutil.copytree(folder, other)
    assert _cli("compare", folder, other, "--out", tmp_path / "cmp") == 0
    assert _cli("check", other, "--baseline", folder, "--junit", tmp_path / "j.xml") == 0
    assert _cli("check", folder, "--write-baseline", tmp_path / "baseline.json") == 0
    # compare on 0/1 run folders written by the test helper (Newcombe rows).
    runs = tmp_path / "toy"
    make_run_folder(runs / "b" / "toy", {str(i): float(i % 2) for i in range(10)})
    make_run_folder(runs / "c" / "toy", {str(i): float(i % 3 == 0) for i in range(10)})
    assert _cli("compare", runs / "b", runs / "c", "--out", tmp_path / "cmp2") == 0
    # analyze: tiny float64 checkpoints from the analysis oracles.
    sys.path.insert(0, str(ROOT / "analysis"))
    try:
        from oracles import intruder_models
    finally:
        sys.path.remove(str(ROOT / "analysis"))
    base, tuned, _ = intruder_models(tmp_path / "models")
    assert _cli("analyze", base, tuned, "--dtype", "float64", "--out", tmp_path / "an",
                "--quiet") == 0
    assert strict_load_all(tmp_path / "cmp") >= 1
    assert strict_load_all(tmp_path / "cmp2") >= 1
    assert strict_load_all(tmp_path / "an") >= 1
    assert strict_load_all(tmp_path) >= 10
