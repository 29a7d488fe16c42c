"""Gate evaluations inside your own test suite, and build run folders for tests.

    from evalkit.testing import assert_no_regression

    def test_finetune_did_not_regress():
        assert_no_regression("runs/candidate", "results/baseline-main.json", max_drop=1.0)

``assert_no_regression`` fails the test (``AssertionError``) exactly when ``evalkit check`` would
exit 1. A baseline that is malformed or does not match the candidate raises ``EvalkitError``
instead, so pytest reports an error, not a failure: a broken gate is not a regression.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalkit.compare.gate import GateResult, PathLike, run_gate, summary_text
from evalkit.errors import EvalkitError


def assert_no_regression(candidate: PathLike | Sequence[PathLike], baseline: PathLike, *,
                         max_drop: float = 1.0, alpha: float = 0.05,
                         tasks: Sequence[str] | None = None, seed: int = 0) -> GateResult:
    """Raise ``AssertionError`` if any metric dropped by more than ``max_drop`` percentage
    points with Holm-corrected significance at ``alpha``; return the gate result otherwise."""
    result = run_gate(candidate, baseline, max_drop=max_drop, alpha=alpha, tasks=tasks,
                      seed=seed)
    if result.failed:
        raise AssertionError(summary_text(result))
    if result.untested:
        raise EvalkitError(summary_text(result).replace("\n", " "))
    return result


# --------------------------------------------------------------------------------------------
# Hand-made run folders (for tests of comparisons and gates, e.g. "a planted regression"),
# written with the same models (evalkit.run.format) and reduction (scoring.metrics) as real runs
# --------------------------------------------------------------------------------------------

_Scores = float | Sequence[float]
Outcome = _Scores | Mapping[str, _Scores]


def _as_samples(outcome: Outcome, score_key: str) -> dict[str, list[float]]:
    by_key = outcome if isinstance(outcome, Mapping) else {score_key: outcome}
    return {key: [float(x) for x in value] if isinstance(value, Sequence) else [float(value)]
            for key, value in by_key.items()}


def make_run_folder(path: PathLike, outcomes: Mapping[str, Outcome], *, task: str = "toy",
                    score_key: str = "acc", metrics: Mapping[str, Mapping[str, Any]] | None = None,
                    version: str = "1.0", generation: Mapping[str, Any] | None = None,
                    checkpoint: str = "toy-model", prompt_salt: str = "",
                    completions: Mapping[str, str] | None = None,
                    status: str = "complete") -> Path:
    """Write a run folder in the documented format from known per-sample scores.

    ``outcomes`` maps doc id -> a score, a list of per-sample scores, or a dict
    ``{score_key: score-or-list}`` for tasks with several score keys. ``metrics`` maps metric
    name -> ``{"aggregation": "mean"|"pass@k", "score_key": ..., "k": ...}`` (default: one mean
    metric named ``score_key``). ``prompt_salt`` changes every prompt hash (a "different prompt"
    run). ``status`` other than ``"complete"`` writes an unfinished run (no metrics.json).
    """
    from evalkit.run.format import (
        MetricsFile,
        RunHeader,
        Sample,
        write_header,
        write_metrics,
        write_samples,
    )
    from evalkit.scoring import Metric
    from evalkit.scoring.metrics import aggregate

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    gen = dict(generation or {"max_tokens": 64, "temperature": 0.0, "top_p": 1.0, "n": 1,
                              "until": []})
    specs = [Metric(name=name, **{"score_key": name, **spec})
             for name, spec in (metrics or {score_key: {}}).items()]
    samples = []
    for doc, outcome in outcomes.items():
        by_key = _as_samples(outcome, score_key)
        prompt = f"prompt for {task} doc {doc}{prompt_salt}"
        for idx in range(max(len(v) for v in by_key.values())):
            samples.append(Sample(
                doc_id=str(doc), sample_idx=idx,
                prompt_hash=hashlib.sha256(prompt.encode()).hexdigest()[:16], prompt=prompt,
                target=f"target {doc}",
                completion=(completions or {}).get(
                    str(doc), f"completion {idx} of doc {doc} by {checkpoint}"),
                finish_reason="stop", n_prompt_tokens=10, n_completion_tokens=5,
                extracted={"answer": f"{checkpoint}:{doc}:{idx}"},
                scores={k: v[idx] for k, v in by_key.items() if idx < len(v)}))
    write_samples(folder, samples)
    write_header(folder, RunHeader.model_validate({
        "status": status,
        "run_key": hashlib.sha256(f"{folder}{task}{checkpoint}".encode()).hexdigest(),
        "task": {"name": task, "version": version, "spec_hash": "0" * 16,
                 "prompt_template_hash": hashlib.sha256(prompt_salt.encode()).hexdigest()[:16],
                 "chat_template_hash": None},
        "checkpoint": {"spec": checkpoint, "name": checkpoint, "kind": "model",
                       "fingerprint": hashlib.sha256(checkpoint.encode()).hexdigest(),
                       "base_fingerprint": None},
        "backend": {"name": "fake", "version": "0", "engine_id": "0", "options": {}},
        "generation": gen, "seed": 1234, "limit": None,
        "versions": {"evalkit": "0.1.0"}, "timings": {},
        "counts": {"docs": len(outcomes), "samples": len(samples), "generated": len(samples),
                   "cached": 0},
    }))
    if status == "complete":
        write_metrics(folder, MetricsFile.model_validate({"task": task, "metrics": aggregate(
            [s.model_dump() for s in samples], specs)}))
    return folder
