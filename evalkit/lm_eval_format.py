"""lm-eval 0.4 results and logged samples <-> evalkit run folders.

One conversion serves three paths: a ``lm_eval:`` task run through evalkit (lm-eval's in-memory
results), ``evalkit import lm-eval`` (lm-eval's ``results_*.json`` + ``samples_*.jsonl``) and
``evalkit export --format lm-eval`` (the way back). An evalkit sample is one document: its
``scores`` hold every numeric per-item metric under lm-eval's ``"metric,filter"`` key, and it
keeps lm-eval's ``doc_hash``, ``prompt_hash`` (of the first request's context, so a run made by
lm-eval and one made by evalkit pair item by item), ``target`` and ``filtered_resps``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from evalkit.store import SCHEMA_VERSION, RunWriter

LM_EVAL_MAJOR = "0.4"


def _arguments(sample: dict) -> list[list]:
    """Request arguments as lists: in memory they are tuples, in lm-eval's files
    ``{"gen_args_0": {"arg_0": ..}}``."""
    args = sample.get("arguments") or []
    if isinstance(args, dict):
        return [list(a.values()) if isinstance(a, dict) else [a] for a in args.values()]
    return [list(a) if isinstance(a, (list, tuple)) else [a] for a in args]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str, ensure_ascii=False))


def to_records(samples: list[dict]) -> list[dict]:
    """lm-eval's samples (one per doc and filter) -> evalkit samples (one per doc)."""
    by_doc: dict[Any, list[dict]] = defaultdict(list)
    for s in samples:
        by_doc[s["doc_id"]].append(s)
    records = []
    for doc_id, per_filter in sorted(by_doc.items(), key=lambda kv: int(kv[0])):
        first = per_filter[0]
        args = _arguments(first)
        prompt = str(args[0][0]) if args and args[0] else ""
        scores, raw, filtered, extracted = {}, {}, {}, {}
        for s in per_filter:
            f = s.get("filter", "none")
            filtered[f] = s.get("filtered_resps")
            for m in s.get("metrics", []):
                raw[f"{m},{f}"] = s.get(m)
                if (v := _number(s.get(m))) is not None:
                    scores[f"{m},{f}"] = v
            fr = s.get("filtered_resps") or []
            if fr and isinstance(fr[0], str):
                extracted[f] = fr[0]
        resps = first.get("resps") or []
        text = resps[0][0] if resps and resps[0] and isinstance(resps[0][0], str) else ""
        generate = all(len(a) > 1 and isinstance(a[1], dict) for a in args) and bool(args)
        records.append({
            "doc_id": str(doc_id), "sample_idx": 0,
            "prompt_hash": first["prompt_hash"], "prompt": prompt,
            "target": str(first.get("target")),
            "completion": text if generate else "", "finish_reason": None,
            "n_prompt_tokens": None, "n_completion_tokens": None,
            "extracted": extracted or None, "scores": scores, "execution": None,
            "doc_hash": first.get("doc_hash"), "target_hash": first.get("target_hash"),
            "filtered_resps": _jsonable(filtered),
            "lm_eval": _jsonable({"doc": first.get("doc"), "arguments": args, "resps": resps,
                                  "metrics": raw}),
        })
    return records


def metric_specs(task_results: dict, higher_is_better: dict, records: list[dict]
                 ) -> dict[str, dict]:
    """metrics.json entries for the metrics compare can pair: numeric per item, and lm-eval's
    aggregate is their mean (acc, exact_match...). Corpus-level ones (perplexity, BLEU) stay in
    run.json's ``lm_eval.results`` only."""
    per_key: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for k, v in r["scores"].items():
            per_key[k].append(v)
    out = {}
    for key, values in per_key.items():
        metric, _, flt = key.partition(",")
        value = task_results.get(key)
        if len(values) != len(records) or not isinstance(value, (int, float)) or \
                not math.isclose(value, sum(values) / len(values), rel_tol=1e-9, abs_tol=1e-12):
            continue
        stderr = task_results.get(f"{metric}_stderr,{flt}")
        out[key] = {"value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                    "n": len(values), "aggregation": "mean", "score_key": key, "k": None,
                    "higher_is_better": bool(higher_is_better.get(metric, True))}
    return out


def lm_eval_block(results: dict, task: str) -> dict:
    """What run.json keeps of lm-eval's results for one task (export writes it back)."""
    return _jsonable({
        "task": task,
        "results": results["results"].get(task, {}),
        "config": results.get("configs", {}).get(task, {}),
        "version": results.get("versions", {}).get(task),
        "n-shot": results.get("n-shot", {}).get(task),
        "higher_is_better": results.get("higher_is_better", {}).get(task, {}),
        "n-samples": results.get("n-samples", {}).get(task),
        "task_hash": task_hash_of(results, task),
    })


def task_hash_of(results: dict, task: str) -> str | None:
    return (results.get("task_hashes") or {}).get(task)


def sample_hash(records: list[dict]) -> str:
    """lm-eval's ``task_hashes`` entry: sha256 over each logged sample's three hashes."""
    parts = []
    for r in records:
        for _ in r["filtered_resps"]:
            parts.append((r.get("doc_hash") or "") + r["prompt_hash"]
                         + (r.get("target_hash") or ""))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def write_run(folder: Path, header: dict, results: dict, task: str, samples: list[dict],
              extra: dict | None = None) -> Path:
    """Write (or rewrite) an evalkit run folder from lm-eval's results for ``task``."""
    records = to_records(samples)
    block = lm_eval_block(results, task)
    block["task_hash"] = block["task_hash"] or sample_hash(records)
    metrics = metric_specs(block["results"], block["higher_is_better"], records)
    (folder / "samples.jsonl").unlink(missing_ok=True)
    writer = RunWriter.open(folder, {**header, "schema_version": SCHEMA_VERSION})
    try:
        for r in records:
            writer.append(r)
        writer.finish(metrics, {"lm_eval": block, **(extra or {}),
                                "counts": {"docs": len(records), "samples": len(records),
                                           **(extra or {}).get("counts", {})}})
    finally:
        writer.close()
    return folder
