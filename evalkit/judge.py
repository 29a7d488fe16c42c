"""``--judge CKPT``: grade finished runs' answers with a second model through evalkit's backends.

For tasks whose scorer config has a ``judge:`` block (the FineTuneBench tasks), every sample's
answer goes into the dataset's own judge prompt (FineTuneBench: ``prompts/latest_news.json`` ->
``eval_prompt``, a system + user message asking for "Correct" or "Incorrect"), rendered with the
judge's chat template and answered greedily. The run folder then gains:

- ``scores["answer,judge"]`` per sample (1 Correct, 0 Incorrect or no verdict) and
  ``scores["answer,judge_invalid"]`` (the judge said neither), ``extracted["judge"]`` (its reply);
- metrics ``answer,judge`` and ``answer,judge_invalid`` in metrics.json;
- ``judge`` in run.json: the judge checkpoint, backend, prompt file/key and prompt hash, so
  every number says which scorer produced it (string metrics are ``answer,exact`` /
  ``answer,contains``).

Judge generations go through the generation cache, so re-judging is free. Files are rewritten
atomically (temp file + rename): a killed judge pass leaves the run as it was.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalkit import strict_json
from evalkit.errors import EvalkitError
from evalkit.models import GenRequest
from evalkit.store import content_key, load_run, write_json_atomic

_VERDICT = re.compile(r"\b(incorrect|correct)\b", re.IGNORECASE)
MAX_TOKENS = 8


def judge_verdict(reply: str) -> float | None:
    """1.0 for "Correct", 0.0 for "Incorrect", None when the reply says neither first."""
    found = _VERDICT.search(reply)
    return None if found is None else float(found[1].lower() == "correct")


def judge_runs(folders: Sequence[Path], judge: str, options: Any) -> list[Path]:
    """Judge every run folder whose task has a judge prompt; returns the folders judged."""
    from evalkit.checkpoints import resolve
    from evalkit.runner import open_backend
    from evalkit.tasks import load_task

    jobs = []
    for folder in folders:
        run, samples, metrics = load_run(folder)
        task = load_task(run["task"]["name"], options.data_dir)
        config = (task.spec.scorer.model_extra or {}).get("judge")
        if config:
            jobs.append((folder, run, samples, metrics, task, config))
    if not jobs:
        return []
    checkpoint = resolve(judge)
    with open_backend(checkpoint, options) as backend:
        for job in jobs:
            _judge_one(*job, checkpoint=checkpoint, backend=backend, options=options)
    return [job[0] for job in jobs]


def _judge_prompt(task: Any, config: dict) -> dict:
    root = task.data_dir
    path = Path(config["prompt"]) if root is None else root / config["prompt"]
    if not path.exists():
        raise EvalkitError(f"task {task.name}: judge prompt file {config['prompt']} not found "
                           f"(data dir {root})")
    prompts = json.loads(path.read_text(encoding="utf-8"))
    if config["key"] not in prompts:
        raise EvalkitError(f"{path} has no prompt '{config['key']}'")
    return prompts[config["key"]]


def _judge_one(folder: Path, run: dict, samples: list[dict], metrics: dict, task: Any,
               config: dict, *, checkpoint: Any, backend: Any, options: Any) -> None:
    from evalkit.scoring.metrics import aggregate
    from evalkit.store import GenerationCache
    from evalkit.tasks.chat import ChatTemplate

    template = _judge_prompt(task, config)
    docs = {d.id: d for d in task.docs()}
    chat = ChatTemplate.load(checkpoint.model_path)
    prompts = []
    for s in samples:
        doc = docs.get(s["doc_id"])
        if doc is None:
            raise EvalkitError(f"{folder}: doc {s['doc_id']} is not in task {task.name}")
        fields = {k: task._render(config[k], doc.data) for k in ("question", "context")}
        user = template["user"].format(answer=task.target(doc), guess=s["completion"].strip(),
                                       **fields)
        prompts.append(chat.render([{"role": "system", "content": template["system"]},
                                    {"role": "user", "content": user}]))
    adapter = checkpoint if checkpoint.kind == "adapter" else None
    requests = [GenRequest(prompt=p, max_tokens=MAX_TOKENS, adapter=adapter) for p in prompts]
    keys = [content_key(checkpoint=checkpoint.fingerprint, backend=backend.name,
                        backend_version=backend.version,
                        backend_options=options.backend_options, prompt=p,
                        generation={"max_tokens": MAX_TOKENS, "temperature": 0.0})
            for p in prompts]
    cache = GenerationCache() if options.use_cache else None
    replies: dict[int, str] = {}
    for i, key in enumerate(keys):
        cached = cache.get(key) if cache else None
        if cached:
            replies[i] = cached[0]["text"]
    todo = [i for i in range(len(prompts)) if i not in replies]
    if todo:
        for k, completions in backend.generate([requests[i] for i in todo]):
            replies[todo[k]] = completions[0].text
            if cache:
                cache.put(keys[todo[k]], [c.__dict__ for c in completions])
    if cache:
        cache.close()
    for i, s in enumerate(samples):
        verdict = judge_verdict(replies[i])
        s["scores"]["answer,judge"] = 0.0 if verdict is None else verdict
        s["scores"]["answer,judge_invalid"] = float(verdict is None)
        s["extracted"] = {**(s.get("extracted") or {}), "judge": replies[i].strip()}
    from evalkit.scoring import Metric

    added = aggregate(samples, [Metric("answer,judge", "answer,judge"),
                                Metric("answer,judge_invalid", "answer,judge_invalid",
                                       higher_is_better=False)])
    _write_lines(folder / "samples.jsonl", samples)
    write_json_atomic(folder / "metrics.json",
                      {**metrics, "metrics": {**metrics["metrics"], **added}})
    write_json_atomic(folder / "run.json", {**run, "judge": {
        "checkpoint": checkpoint.describe(), "backend": backend.info(),
        "prompt": f"{config['prompt']}#{config['key']}",
        "prompt_hash": content_key(template=template)[:16], "max_tokens": MAX_TOKENS,
        "metrics": ["answer,judge", "answer,judge_invalid"]}})


def _write_lines(path: Path, records: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for r in records:
            f.write(strict_json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
