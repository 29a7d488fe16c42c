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
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalkit import stats as st
from evalkit.errors import EvalkitError
from evalkit.gate import GateResult, PathLike, run_gate, summary_text


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
# Hand-made run folders (for tests of comparisons and gates, e.g. "a planted regression")
# --------------------------------------------------------------------------------------------

_Scores = float | Sequence[float | None] | None
Outcome = _Scores | Mapping[str, _Scores]


def _as_samples(outcome: Outcome, score_key: str) -> dict[str, list[float | None]]:
    by_key = outcome if isinstance(outcome, Mapping) else {score_key: outcome}
    out = {}
    for key, value in by_key.items():
        out[key] = list(value) if isinstance(value, Sequence) else [value]
    return out


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
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    gen = dict(generation or {"max_tokens": 64, "temperature": 0.0, "top_p": 1.0, "n": 1,
                              "until": []})
    specs = {name: {"aggregation": "mean", "score_key": name, "k": None,
                    "higher_is_better": True, **spec}
             for name, spec in (metrics or {score_key: {}}).items()}
    per_doc = {str(d): _as_samples(o, score_key) for d, o in outcomes.items()}
    lines = []
    for doc, by_key in per_doc.items():
        n = max(len(v) for v in by_key.values())
        prompt = f"prompt for {task} doc {doc}{prompt_salt}"
        for idx in range(n):
            scores = {k: v[idx] for k, v in by_key.items()}
            text = (completions or {}).get(doc, f"completion {idx} of doc {doc} by {checkpoint}")
            lines.append(json.dumps({
                "doc_id": doc, "sample_idx": idx,
                "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest()[:16],
                "prompt": prompt, "target": f"target {doc}", "completion": text,
                "finish_reason": "stop", "n_prompt_tokens": 10, "n_completion_tokens": 5,
                "extracted": {"answer": f"{checkpoint}:{doc}:{idx}"}, "scores": scores,
                "execution": None}))
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = {
        "schema_version": 1, "status": status,
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
        "counts": {"docs": len(per_doc), "samples": len(lines), "generated": len(lines),
                   "cached": 0},
    }
    (folder / "run.json").write_text(json.dumps(run, indent=1), encoding="utf-8")
    if status == "complete":
        metric_values = {}
        for name, spec in specs.items():
            items = []
            for by_key in per_doc.values():
                s = [x for x in by_key[spec["score_key"]] if x is not None]
                if spec["aggregation"] == "pass@k":
                    if len(s) >= spec["k"]:
                        items.append(st.pass_at_k(len(s), int(sum(s)), spec["k"]))
                elif s:
                    items.append(sum(s) / len(s))
            metric_values[name] = {
                "value": sum(items) / len(items) if items else None,
                "stderr": st.clustered_sem(items) if len(items) > 1 else None,
                "n": len(items), **spec}
        (folder / "metrics.json").write_text(json.dumps(
            {"schema_version": 1, "task": task, "metrics": metric_values}, indent=1),
            encoding="utf-8")
    return folder
