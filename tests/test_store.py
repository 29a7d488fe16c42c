"""Run folders survive kills: truncated lines, duplicates, unfinished runs; the format is
standard JSON and refuses other schema versions."""

from __future__ import annotations

import json

import pytest

from evalkit.errors import EvalkitError
from evalkit.run.format import RunHeader, Sample, TaskInfo, load_run, repair_samples
from evalkit.run.store import GenerationCache, RunWriter, cached_execute


def sample(doc, idx=0) -> Sample:
    return Sample(doc_id=str(doc), sample_idx=idx, prompt_hash="0" * 16, prompt="p",
                  completion="c", scores={"s": 1.0})


def header(key: str = "k") -> RunHeader:
    return RunHeader(run_key=key, task=TaskInfo(name="t", version="1"), generation={})


def test_truncated_last_line_is_cut_and_duplicates_dropped(tmp_path):
    lines = [sample(0).line(), sample(1).line(), sample(0).line()]
    (tmp_path / "samples.jsonl").write_text("\n".join(lines) + '\n{"doc_id": "2", "samp')
    records = repair_samples(tmp_path)
    assert [r.doc_id for r in records] == ["0", "1"]
    text = (tmp_path / "samples.jsonl").read_text()
    assert text.endswith("\n") and '"2"' not in text  # the torn line is gone from disk


def test_unfinished_runs_are_never_results(tmp_path):
    writer = RunWriter.open(tmp_path / "run", header())
    writer.append(sample(0))
    with pytest.raises(EvalkitError, match="not a finished run"):
        load_run(tmp_path / "run")
    writer.finish({"m": {"value": 1.0, "n": 1, "aggregation": "mean", "score_key": "s"}}, {})
    run = load_run(tmp_path / "run")
    assert run.header.status == "complete" and len(run.samples) == 1
    assert run.metrics.metrics["m"].value == 1.0


def test_non_finite_metrics_are_written_as_null(tmp_path):
    writer = RunWriter.open(tmp_path, header())
    writer.append(sample(0))
    writer.finish({"m": {"value": float("nan"), "stderr": float("inf"), "n": 1,
                         "aggregation": "group", "score_key": "s"}}, {})
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    m = json.loads(text)["metrics"]["m"]  # strict JSON parses
    assert m["value"] is None and m["stderr"] is None


def test_other_schema_versions_are_refused_in_one_line(tmp_path):
    writer = RunWriter.open(tmp_path, header())
    writer.finish({}, {})
    raw = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**raw, "schema_version": 0}))
    with pytest.raises(EvalkitError, match="run format version 0 is not supported"):
        load_run(tmp_path)


def test_a_sample_without_scores_is_refused(tmp_path):
    writer = RunWriter.open(tmp_path, header())
    writer.finish({}, {})
    bad = {**json.loads(sample(0).line()), "scores": {"s": None}}
    (tmp_path / "samples.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(EvalkitError, match=r"samples\.jsonl:1 is not a valid sample"):
        load_run(tmp_path)


def test_resume_refuses_another_runs_folder(tmp_path):
    RunWriter.open(tmp_path / "run", header("a")).close()
    with pytest.raises(EvalkitError, match="holds a different run"):
        RunWriter.open(tmp_path / "run", header("b"))


def test_reopening_resumes_and_invalidates_old_metrics(tmp_path):
    w = RunWriter.open(tmp_path, header())
    w.append(sample(0))
    w.finish({}, {})
    w = RunWriter.open(tmp_path, header())
    assert w.done == {("0", 0)}
    assert not (tmp_path / "metrics.json").exists()
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "running"
    w.close()


def test_a_resume_without_an_engine_keeps_the_engines_record(tmp_path):
    engine = {"name": "vllm", "version": "0.32.0", "engine_id": "e1",
              "options": {"dtype": "float32"}}
    unloaded = {"name": "vllm", "version": "0.32.0", "engine_id": None, "options": {}}
    RunWriter.open(tmp_path, header().model_copy(update={"backend": engine})).finish({}, {})
    RunWriter.open(tmp_path, header().model_copy(update={"backend": unloaded})).finish({}, {})
    assert load_run(tmp_path).header.backend == engine
    other = {**engine, "engine_id": "e2"}  # an engine that answered this time is recorded
    RunWriter.open(tmp_path, header().model_copy(update={"backend": other})).finish({}, {})
    assert load_run(tmp_path).header.backend == other


def test_generation_cache_roundtrip(tmp_path):
    cache = GenerationCache(tmp_path / "g.sqlite")
    assert cache.get("k") is None
    cache.put("k", [{"text": "hi"}])
    cache.close()
    assert GenerationCache(tmp_path / "g.sqlite").get("k") == [{"text": "hi"}]


def test_cached_execute_asks_the_backend_only_for_misses_and_caches_them(tmp_path):
    from evalkit.models import Completion

    cache = GenerationCache(tmp_path / "g.sqlite")
    cache.put("a", [{"text": "A", "finish_reason": "stop", "n_prompt_tokens": 1,
                     "n_completion_tokens": 1}])
    asked: list[list[int]] = []

    def execute(misses):
        asked.append(misses)
        for j, i in enumerate(misses):
            yield j, [Completion(f"new {i}", "stop", 1, 1)]

    got = {i: (r[0].text, hit) for i, r, hit in
           cached_execute(["a", "b", "c"], cache, Completion).results(execute)}
    assert asked == [[1, 2]]
    assert got == {0: ("A", True), 1: ("new 1", False), 2: ("new 2", False)}
    assert cache.get("c")[0]["text"] == "new 2"  # cached the moment it arrived
    assert cached_execute(["a", "b", "c"], cache, Completion).misses == []
