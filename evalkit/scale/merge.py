"""`evalkit merge`: finished shard folders -> the run folder an unsharded run writes.

Checks, before anything is written: every folder is a finished shard; the shards of one run
agree on everything that defines it (run_key, checkpoint fingerprint, task spec, generation,
seed, backend); shards 0..N-1 are each there exactly once; every item of the run is in exactly
one shard and in the shard that owns it. The merged samples.jsonl is the shards' samples in doc
order, i.e. byte for byte what the unsharded run writes; metrics are recomputed from them.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.run.format import RunHeader, read_header, repair_samples
from evalkit.run.store import RunWriter
from evalkit.scale.shard import shard_of

# What must be equal across the shards of one run, and how to say which differs.
_DEFINING = {
    "checkpoint fingerprint": lambda r: r["checkpoint"].get("fingerprint"),
    "task version/spec": lambda r: (r["task"].get("version"), r["task"].get("spec_hash"),
                                    r["task"].get("chat_template_hash")),
    "generation settings": lambda r: r.get("generation"),
    "seed": lambda r: r.get("seed"),
    "limit": lambda r: r.get("limit"),
    "backend": lambda r: (r["backend"].get("name"), r["backend"].get("options")),
}


def find_shards(paths: list[Path]) -> list[Path]:
    """Shard run folders given directly or anywhere under the given folders."""
    found: list[Path] = []
    for p in paths:
        if not p.exists():
            raise EvalkitError(f"{p} does not exist")
        candidates = [p] if (p / "run.json").exists() else sorted(
            f.parent for f in p.rglob("run.json"))
        shards = [c for c in candidates if _header(c).get("shard")]
        if not shards:
            raise EvalkitError(f"{p} holds no shard run folder (written by `evalkit run "
                               "--shard i/N`)")
        found.extend(shards)
    return found


def merge_shards(paths: list[Path], out_dir: Path, data_dir: Path | None = None) -> list[Path]:
    """Merge every run found under ``paths`` into ``out_dir``; returns the merged folders."""
    shards = find_shards(paths)
    runs: dict[str, list[tuple[Path, dict]]] = defaultdict(list)
    for folder in shards:
        run = _header(folder)
        if run.get("status") != "complete" or not (folder / "metrics.json").exists():
            raise EvalkitError(f"{folder} is an unfinished shard; rerun its command to finish "
                               "it before merging")
        runs[run["run_key"]].append((folder, run))
    _refuse_mixed_configs(runs)
    return [_merge_one(group, out_dir, data_dir) for group in runs.values()]


def _refuse_mixed_configs(runs: dict[str, list[tuple[Path, dict]]]) -> None:
    """Shards of one task and checkpoint name under different run keys are a mistake (another
    model version, other settings), not two runs: name what differs."""
    by_name: dict[tuple, list[tuple[Path, dict]]] = defaultdict(list)
    for group in runs.values():
        folder, run = group[0]
        by_name[(run["task"]["name"], run["checkpoint"].get("name"))].append((folder, run))
    for (task, _), groups in by_name.items():
        if len(groups) < 2:
            continue
        (a, ra), (b, rb) = groups[0], groups[1]
        differs = [name for name, get in _DEFINING.items() if get(ra) != get(rb)] or ["run key"]
        raise EvalkitError(f"shards of {task} have different configurations ({', '.join(differs)} "
                           f"differ: {a} vs {b}); merge only shards of one run")


def _merge_one(group: list[tuple[Path, dict]], out_dir: Path, data_dir: Path | None) -> Path:
    from evalkit.run.runner import ordered_samples, run_metrics
    from evalkit.tasks import load_task

    first_folder, first = group[0]
    count = first["shard"]["count"]
    by_index: dict[int, Path] = {}
    for folder, run in group:
        index = run["shard"]["index"]
        if run["shard"]["count"] != count:
            raise EvalkitError(f"{folder} is shard {index}/{run['shard']['count']} but "
                               f"{first_folder} is one of {count} shards")
        if index in by_index:
            raise EvalkitError(f"shard {index}/{count} given twice: {by_index[index]} and "
                               f"{folder}")
        by_index[index] = folder
    missing = [f"{i}/{count}" for i in range(count) if i not in by_index]
    if missing:
        raise EvalkitError(f"{first['task']['name']} · {first['checkpoint'].get('name')}: "
                           f"shard(s) {', '.join(missing)} missing (found {len(by_index)} of "
                           f"{count} under the given folders)")

    task = load_task(first["task"]["name"], data_dir or _data_dir(first))
    if task.spec.spec_hash() != first["task"]["spec_hash"]:
        raise EvalkitError(f"task {task.name} changed since the shards ran (spec hash differs); "
                           "rerun them")
    docs = task.docs(first.get("limit"))
    if len(docs) != first["shard"]["docs"]:
        raise EvalkitError(f"task {task.name} has {len(docs)} items now but the shards ran on "
                           f"{first['shard']['docs']}; pass the --data-dir they used")
    n = first["generation"]["n"]
    samples, seen = [], {}
    for index in range(count):
        folder = by_index[index]
        for s in repair_samples(folder):
            key = (s.doc_id, s.sample_idx)
            if key in seen:
                raise EvalkitError(f"item {key[0]} (sample {key[1]}) is in both {seen[key]} and "
                                   f"{folder}")
            if shard_of(s.doc_id, count) != index:
                raise EvalkitError(f"{folder} holds item {s.doc_id}, which shard "
                                   f"{shard_of(s.doc_id, count)}/{count} owns")
            seen[key] = folder
            samples.append(s)
    expected = {(d.id, i) for d in docs for i in range(n)}
    lost = sorted(expected - seen.keys())
    if lost:
        raise EvalkitError(f"{len(lost)} sample(s) missing from the shards, e.g. item "
                           f"{lost[0][0]} sample {lost[0][1]}")
    samples = ordered_samples(docs, samples)

    runs = [run for _, run in sorted(group, key=lambda g: g[1]["shard"]["index"])]
    folder = Path(out_dir) / task.name / first_folder.name.rsplit(".shard-", 1)[0]
    if (folder / "run.json").exists() and read_header(folder).run_key != first["run_key"]:
        raise EvalkitError(f"{folder} holds a different run; choose another --out")
    header = {k: v for k, v in first.items() if k != "shard"}
    header["timings"] = {"started": min(r["timings"]["started"] for r in runs)}
    writer = RunWriter.open(folder, RunHeader.model_validate({**header, "status": "running"}))
    extra = {
        "timings": {"started": header["timings"]["started"],
                    "finished": max(r["timings"]["finished"] for r in runs),
                    # shards run side by side: the run took as long as the slowest shard
                    "generation_s": max(r["timings"].get("generation_s", 0) for r in runs),
                    "total_s": max(r["timings"].get("total_s", 0) for r in runs)},
        "counts": {"docs": len(docs), "samples": len(samples),
                   **{k: sum(r["counts"].get(k, 0) for r in runs)
                      for k in ("generated", "cached", "resumed", "tampered")}},
    }
    writer.finish(run_metrics(task, docs, [s.model_dump() for s in samples], n), extra,
                  samples=samples)
    return folder


def _header(folder: Path) -> dict[str, Any]:
    """run.json as a dict (extra keys such as ``shard`` included), version-checked."""
    return read_header(folder).model_dump()


def _data_dir(run: dict[str, Any]) -> Path | None:
    return Path(run["data_dir"]) if run.get("data_dir") else None
