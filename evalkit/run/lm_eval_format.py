"""lm-eval 0.4 results and logged samples <-> evalkit run folders.

One conversion serves three paths: a ``lm_eval:`` task run through evalkit (lm-eval's in-memory
results), ``evalkit import lm-eval`` (lm-eval's ``results_*.json`` + ``samples_*.jsonl``) and
``evalkit export --format lm-eval`` (the way back). An evalkit sample is one document: its
``scores`` hold every numeric per-item metric under lm-eval's ``"metric,filter"`` key, and it
keeps lm-eval's ``doc_hash``, ``prompt_hash`` (of the first request's context, so a run made by
lm-eval and one made by evalkit pair item by item), ``target`` and ``filtered_resps``.
"""
# size: one conversion both ways (lm-eval 0.4 results and samples <-> run folders) serving
# three paths, groups (their tree and aggregates) included in each direction.

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.run.format import SCHEMA_VERSION, RunHeader, Sample, read_json
from evalkit.run.store import RunWriter

LM_EVAL_MAJOR = "0.4"


def _arguments(sample: dict[str, Any]) -> list[list[Any]]:
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


def to_records(samples: list[dict[str, Any]], leaf: str | None = None
               ) -> list[dict[str, Any]]:
    """lm-eval's samples (one per doc and filter) -> evalkit samples (one per doc). In a
    group's run, ``leaf`` names the subtask: doc ids become ``<leaf>/<doc_id>`` (unique in the
    group, so compare pairs them) and ``lm_eval.task`` keeps the subtask."""
    by_doc: dict[Any, list[dict[str, Any]]] = defaultdict(list)
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
            "doc_id": str(doc_id) if leaf is None else f"{leaf}/{doc_id}", "sample_idx": 0,
            "prompt_hash": first["prompt_hash"], "prompt": prompt,
            "target": str(first.get("target")),
            "completion": text if generate else "", "finish_reason": None,
            "n_prompt_tokens": None, "n_completion_tokens": None,
            "extracted": extracted or None, "scores": scores, "execution": None,
            "doc_hash": first.get("doc_hash"), "target_hash": first.get("target_hash"),
            "filtered_resps": _jsonable(filtered),
            "lm_eval": _jsonable({"doc": first.get("doc"), "arguments": args, "resps": resps,
                                  "metrics": raw, **({"task": leaf} if leaf else {})}),
        })
    return records


def metric_specs(task_results: dict[str, Any], higher_is_better: dict[str, Any],
                 records: list[dict[str, Any]]
                 ) -> dict[str, dict[str, Any]]:
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


def lm_eval_block(results: dict[str, Any], task: str) -> dict[str, Any]:
    """What run.json keeps of lm-eval's results for one task or group (export writes it back).
    A group keeps its members' blocks (subgroups and leaves) under ``subtasks`` and its tree
    under ``group_subtasks``."""
    block: dict[str, Any] = _jsonable({
        "task": task,
        "results": results["results"].get(task, {}),
        "config": results.get("configs", {}).get(task, {}),
        "version": results.get("versions", {}).get(task),
        "n-shot": results.get("n-shot", {}).get(task),
        "higher_is_better": results.get("higher_is_better", {}).get(task, {}),
        "n-samples": results.get("n-samples", {}).get(task),
        "task_hash": task_hash_of(results, task),
    })
    tree = group_tree(results, task)
    if tree:
        block["group_subtasks"] = tree
        block["subtasks"] = {m: lm_eval_block(results, m)
                             for members in tree.values() for m in members}
    return block


def group_tree(results: dict[str, Any], group: str) -> dict[str, list[str]]:
    """``group_subtasks`` restricted to ``group`` and the groups under it ({} for a task)."""
    every = results.get("group_subtasks") or {}
    tree: dict[str, list[str]] = {}
    todo = [group]
    while todo:
        name = todo.pop()
        if name in every and name not in tree:
            tree[name] = list(every[name])
            todo.extend(tree[name])
    return tree


def leaves_of(tree: dict[str, list[str]], group: str) -> list[str]:
    if group not in tree:
        return [group]
    return [leaf for member in tree[group] for leaf in leaves_of(tree, member)]


def task_hash_of(results: dict[str, Any], task: str) -> str | None:
    return (results.get("task_hashes") or {}).get(task)


def sample_hash(records: list[dict[str, Any]]) -> str:
    """lm-eval's ``task_hashes`` entry: sha256 over each logged sample's three hashes."""
    parts = []
    for r in records:
        for _ in r["filtered_resps"]:
            parts.append((r.get("doc_hash") or "") + r["prompt_hash"]
                         + (r.get("target_hash") or ""))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def write_run(folder: Path, header: dict[str, Any], results: dict[str, Any], task: str,
              samples: dict[str, list[dict[str, Any]]],
              extra: dict[str, Any] | None = None) -> Path:
    """Write (or rewrite) an evalkit run folder from lm-eval's results for ``task`` (a task, or
    a group: its leaves' samples in one folder, its metrics lm-eval's group aggregate)."""
    tree = group_tree(results, task)
    if tree:
        records = [r for leaf in sorted(leaves_of(tree, task))
                   for r in to_records(samples[leaf], leaf)]
    else:
        records = to_records(samples[task])
    block = lm_eval_block(results, task)
    block["task_hash"] = block["task_hash"] or sample_hash(records)
    metrics = metric_specs(block["results"], block["higher_is_better"], records)
    (folder / "samples.jsonl").unlink(missing_ok=True)
    writer = RunWriter.open(folder, RunHeader.model_validate(
        {**header, "schema_version": SCHEMA_VERSION}))
    try:
        for r in records:
            writer.append(Sample.model_validate(r))
        writer.finish(metrics, {"lm_eval": block, **(extra or {}),
                                "counts": {"docs": len(records), "samples": len(records),
                                           **(extra or {}).get("counts", {})}})
    finally:
        writer.close()
    return folder


# ------------------------------------------------------------------------------ import


def import_output_dir(output_dir: Path, out: Path) -> list[Path]:
    """lm-eval 0.4 output (``results_*.json`` + ``samples_<task>_*.jsonl``, written with
    ``--log_samples``) -> one evalkit run folder per task, and one per top-level group (its
    leaves' samples together, as an ``lm_eval:GROUP`` run writes them)."""
    from evalkit.run.store import content_key
    from evalkit.tasks.lm_eval import (
        PREFIX,
        config_hash,
        generation_settings,
        group_config,
        prompt_template_hash,
    )

    if not output_dir.is_dir():
        raise EvalkitError(f"{output_dir} is not a folder")
    results_files = sorted(output_dir.rglob("results_*.json"))
    if not results_files:
        raise EvalkitError(f"{output_dir} holds no lm-eval results_*.json")
    folders = []
    for rf in results_files:
        results = read_json(rf)
        if not isinstance(results, dict) or not isinstance(results.get("results"), dict):
            raise EvalkitError(f"{rf} is not an lm-eval results file (no \"results\")")
        version = str(results.get("lm_eval_version") or "")
        if version.split(".")[:2] != LM_EVAL_MAJOR.split("."):
            raise EvalkitError(f"{rf} was written by lm-eval {version or '(unknown version)'}; "
                               f"evalkit imports lm-eval {LM_EVAL_MAJOR}.x outputs")
        date_id = rf.stem[len("results_"):]
        configs = results.get("configs") or {}
        every = results.get("group_subtasks") or {}
        children = {c for members in every.values() for c in members}
        runs: dict[str, list[str]] = {}  # a top-level group (one run) or a lone task -> leaves
        for group in every:
            leaves = leaves_of(group_tree(results, group), group)
            if group not in children and leaves and all(leaf in configs for leaf in leaves):
                runs[group] = leaves
        grouped = {leaf for leaves in runs.values() for leaf in leaves}
        runs.update({task: [task] for task in configs if task not in grouped})
        for task, leaves in runs.items():
            samples = {}
            for leaf in leaves:
                sf = rf.parent / f"samples_{leaf}_{date_id}.jsonl"
                if not sf.exists():
                    raise EvalkitError(f"{rf.parent} has no samples_{leaf}_{date_id}.jsonl: "
                                       "rerun lm-eval with per-sample logging on (its -s "
                                       "option) to import per-item results")
                samples[leaf] = _read_jsonl(sf)
            config = configs[task] if task in configs else group_config(
                task, group_tree(results, task), {leaf: configs[leaf] for leaf in leaves})
            run_config = results.get("config") or {}
            model = str(results.get("model_name") or run_config.get("model") or "lm-eval")
            checkpoint = {"spec": run_config.get("model_args"), "name": model,
                          "kind": "imported", "source": "lm-eval", "path": None,
                          "fingerprint": None, "base_fingerprint": None}
            generation = generation_settings(config)
            key = content_key(task=task, results=str(rf.resolve()))
            spec = config_hash(config)
            header = {
                "status": "running", "run_key": key,
                "task": {"name": PREFIX + task, "version": str(results["versions"].get(task)),
                         "spec_hash": spec, "prompt_template_hash": prompt_template_hash(config),
                         "chat_template_hash": results.get("chat_template_sha"), "file": None,
                         "lm_eval_task": task, "config_hash": spec},
                "checkpoint": checkpoint,
                "backend": {"name": f"lm-eval:{run_config.get('model', '?')}",
                            "version": version, "engine_id": None, "options": run_config},
                "generation": generation, "seed": run_config.get("random_seed"),
                "limit": run_config.get("limit"), "imported_from": str(rf.resolve()),
                "versions": {"lm_eval": version},
                "timings": {"started": results.get("date")},
            }
            folder = out / (PREFIX + task) / f"{_slug(model)}-{key[:10]}"
            folders.append(write_run(folder, header, results, task, samples, extra={
                "timings": {"started": results.get("date"),
                            "total_s": _float(results.get("total_evaluation_time_seconds"))}}))
    return folders


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    raise EvalkitError(f"{path} line {n} is not valid JSON") from None
    return out


def _float(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]


# ------------------------------------------------------------------------------ export


def export_runs(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """evalkit run folders -> ``results_<date>.json`` + ``samples_<task>_<date>.jsonl`` in
    lm-eval 0.4's schema (lm-eval's ``make_table`` reads the results)."""
    from datetime import datetime

    from evalkit.run.format import load_run

    date_id = datetime.now().isoformat().replace(":", "-")
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"results": {}, "group_subtasks": {}, "configs": {},
                               "versions": {}, "n-shot": {}, "higher_is_better": {},
                               "n-samples": {}}
    written, models, task_hashes, seconds = [], set(), {}, 0.0
    for run_dir in run_dirs:
        run, records, metrics = load_run(run_dir).dicts()
        name = run["task"]["name"]
        task = name.removeprefix("lm_eval:")
        if task in results["results"]:
            raise EvalkitError(f"two runs of task '{task}' to export; export one per task")
        block = run.get("lm_eval") or _native_block(task, run, records, metrics["metrics"])
        results["group_subtasks"].update(block.get("group_subtasks", {}))
        by_leaf: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in records:  # a group's samples go back to one file per leaf
            by_leaf[(r.get("lm_eval") or {}).get("task", task)].append(r)
        for member, b in {task: block, **block.get("subtasks", {})}.items():
            for key, value in (("results", b["results"]), ("versions", b["version"]),
                               ("n-shot", b["n-shot"]),
                               ("higher_is_better", b["higher_is_better"])):
                results[key][member] = value
            if member in results["group_subtasks"]:
                if any("," in k for k in b["results"]):  # as lm-eval: groups that aggregate
                    results.setdefault("groups", {})[member] = b["results"]
            else:  # lm-eval keeps these for leaves only
                results["configs"][member] = b["config"]
                results["n-samples"][member] = b["n-samples"]
                task_hashes[member] = b.get("task_hash") or sample_hash(by_leaf[member])
        models.add(run["checkpoint"].get("name") or "?")
        seconds += _float(run.get("timings", {}).get("total_s")) or 0.0
        for leaf, leaf_records in by_leaf.items():
            path = out_dir / f"samples_{leaf}_{date_id}.jsonl"
            with path.open("w", encoding="utf-8") as f:
                for line in _sample_lines(leaf_records, run.get("lm_eval") is not None):
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
            written.append(path)
        last_run = run
    model = ", ".join(sorted(models))
    results.update({
        "config": {"model": model, "model_args": last_run["checkpoint"].get("spec"),
                   "batch_size": None, "limit": last_run.get("limit"),
                   "random_seed": last_run.get("seed"), "evalkit_backend": last_run["backend"]},
        "task_hashes": task_hashes, "model_source": "evalkit", "model_name": model,
        "model_name_sanitized": _slug(model), "system_instruction": None,
        "system_instruction_sha": None, "fewshot_as_multiturn": False,
        "chat_template": None, "chat_template_sha": last_run["task"].get("chat_template_hash"),
        "date": datetime.now().timestamp(), "lm_eval_version": _lm_eval_version(),
        "total_evaluation_time_seconds": str(seconds),
    })
    results_path = out_dir / f"results_{date_id}.json"
    results_path.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    return [results_path, *written]


def _lm_eval_version() -> str:
    from importlib import metadata

    return metadata.version("lm_eval")


def _native_block(task: str, run: dict[str, Any], records: list[dict[str, Any]],
                  metrics: dict[str, Any]) -> dict[str, Any]:
    """An lm-eval results entry for a native evalkit task ("metric,filter" keys: a metric
    without a filter gets lm-eval's "none")."""
    res: dict[str, Any] = {"alias": task}
    hib = {}
    for name, m in metrics.items():
        metric, _, flt = name.partition(",")
        res[f"{metric},{flt or 'none'}"] = m["value"]
        res[f"{metric}_stderr,{flt or 'none'}"] = "N/A" if m["stderr"] is None else m["stderr"]
        hib[metric] = m.get("higher_is_better", True)
    return {"results": res, "version": run["task"]["version"], "n-shot": None,
            "config": {"task": task, "output_type": run["generation"].get("output_type",
                                                                          "generate_until"),
                       "generation_kwargs": run["generation"], "evalkit_task": run["task"]},
            "higher_is_better": hib,
            "n-samples": {"original": len(records), "effective": len(records)}}


def _sample_lines(records: list[dict[str, Any]], from_lm_eval: bool) -> list[dict[str, Any]]:
    lines = []
    for r in records:
        if from_lm_eval:
            le = r["lm_eval"]
            args = le["arguments"]
            for flt, fr in r["filtered_resps"].items():
                names = [k.partition(",")[0] for k in le["metrics"] if k.endswith("," + flt)]
                lines.append({
                    "doc_id": int(r["doc_id"].rpartition("/")[2]),  # a group's: "<leaf>/<id>"
                    "doc": le["doc"], "target": r["target"],
                    "arguments": {f"gen_args_{i}": {f"arg_{j}": a for j, a in enumerate(arg)}
                                  for i, arg in enumerate(args)},
                    "resps": le["resps"], "filtered_resps": fr, "filter": flt,
                    "metrics": names, **{n: le["metrics"][f"{n},{flt}"] for n in names},
                    "doc_hash": r["doc_hash"], "prompt_hash": r["prompt_hash"],
                    "target_hash": r["target_hash"]})
            continue
        if r.get("sample_idx", 0) != 0:
            continue  # lm-eval logs one line per doc; repeats live in its resps
        names = [k.partition(",")[0] for k in r["scores"]]
        lines.append({
            "doc_id": r["doc_id"], "doc": {}, "target": r["target"],
            "arguments": {"gen_args_0": {"arg_0": r["prompt"]}},
            "resps": [[r.get("completion", "")]], "filtered_resps": [r.get("completion", "")],
            "filter": "none", "metrics": names,
            **{k.partition(",")[0]: v for k, v in r["scores"].items()},
            "doc_hash": hashlib.sha256(b"{}").hexdigest(), "prompt_hash": r["prompt_hash"],
            "target_hash": hashlib.sha256(str(r["target"]).encode()).hexdigest()})
    return lines
