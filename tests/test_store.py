"""Run folders survive kills: truncated lines, duplicates, unfinished runs."""

from __future__ import annotations

import json

import pytest

from evalkit.errors import EvalkitError
from evalkit.run.store import GenerationCache, RunWriter, load_run, repair_samples


def sample(doc, idx=0):
    return {"doc_id": str(doc), "sample_idx": idx, "scores": {"s": 1.0}}


def test_truncated_last_line_is_cut_and_duplicates_dropped(tmp_path):
    lines = [json.dumps(sample(0)), json.dumps(sample(1)), json.dumps(sample(0))]
    (tmp_path / "samples.jsonl").write_text("\n".join(lines) + '\n{"doc_id": "2", "samp')
    records = repair_samples(tmp_path)
    assert [r["doc_id"] for r in records] == ["0", "1"]
    text = (tmp_path / "samples.jsonl").read_text()
    assert text.endswith("\n") and '"2"' not in text  # the torn line is gone from disk


def test_unfinished_runs_are_never_results(tmp_path):
    header = {"schema_version": 1, "run_key": "k", "task": {"name": "t"}}
    writer = RunWriter.open(tmp_path / "run", header)
    writer.append(sample(0))
    with pytest.raises(EvalkitError, match="unfinished run"):
        load_run(tmp_path / "run")
    writer.finish({"m": {"value": 1.0}}, {})
    run, samples, metrics = load_run(tmp_path / "run")
    assert run["status"] == "complete" and len(samples) == 1 and metrics["metrics"]["m"]


def test_resume_refuses_another_runs_folder(tmp_path):
    RunWriter.open(tmp_path / "run", {"run_key": "a", "task": {"name": "t"}}).close()
    with pytest.raises(EvalkitError, match="holds a different run"):
        RunWriter.open(tmp_path / "run", {"run_key": "b", "task": {"name": "t"}})


def test_reopening_resumes_and_invalidates_old_metrics(tmp_path):
    header = {"schema_version": 1, "run_key": "k", "task": {"name": "t"}}
    w = RunWriter.open(tmp_path, header)
    w.append(sample(0))
    w.finish({}, {})
    w = RunWriter.open(tmp_path, header)
    assert w.done == {("0", 0)}
    assert not (tmp_path / "metrics.json").exists()
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "running"
    w.close()


def test_generation_cache_roundtrip(tmp_path):
    cache = GenerationCache(tmp_path / "g.sqlite")
    assert cache.get("k") is None
    cache.put("k", [{"text": "hi"}])
    cache.close()
    assert GenerationCache(tmp_path / "g.sqlite").get("k") == [{"text": "hi"}]
