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
  ``answer,contains``), and ``counts``: how many replies were generated and how many came
  from the cache.

Judge generations go through the generation cache, so re-judging is free. Files are rewritten
atomically (temp file + rename): a killed judge pass leaves the run as it was.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models import Completion, GenRequest
from evalkit.run.format import (
    MetricsFile,
    Run,
    load_run,
    write_header,
    write_metrics,
    write_samples,
)
from evalkit.run.store import GenerationCache, cached_execute, content_key

_VERDICT = re.compile(r"\b(incorrect|correct)\b", re.IGNORECASE)
MAX_TOKENS = 8


def judge_verdict(reply: str) -> float | None:
    """1.0 for "Correct", 0.0 for "Incorrect", None when the reply says neither first."""
    found = _VERDICT.search(reply)
    return None if found is None else float(found[1].lower() == "correct")


def judge_runs(folders: Sequence[Path], judge: str, options: Any) -> list[Path]:
    """Judge every run folder whose task has a judge prompt; returns the folders judged."""
    from evalkit.checkpoints import resolve
    from evalkit.run.runner import open_backend
    from evalkit.tasks import load_task

    jobs = []
    for folder in folders:
        run = load_run(folder)
        task = load_task(run.header.task.name, options.data_dir)
        config = (task.spec.scorer.model_extra or {}).get("judge")
        if config:
            jobs.append((run, task, config))
    if not jobs:
        return []
    checkpoint = resolve(judge)
    with open_backend(checkpoint, options) as backend:
        for job in jobs:
            _judge_one(*job, checkpoint=checkpoint, backend=backend, options=options)
    return [job[0].path for job in jobs]


def _judge_prompt(task: Any, config: dict[str, Any]) -> dict[str, str]:
    root = task.data_dir
    path = Path(config["prompt"]) if root is None else root / config["prompt"]
    if not path.exists():
        raise EvalkitError(f"task {task.name}: judge prompt file {config['prompt']} not found "
                           f"(data dir {root})")
    prompts = json.loads(path.read_text(encoding="utf-8"))
    if config["key"] not in prompts:
        raise EvalkitError(f"{path} has no prompt '{config['key']}'")
    return dict(prompts[config["key"]])


def _judge_one(run: Run, task: Any, config: dict[str, Any], *, checkpoint: Any, backend: Any,
               options: Any) -> None:
    from evalkit.scoring import Metric
    from evalkit.scoring.metrics import aggregate
    from evalkit.tasks.chat import ChatTemplate

    folder, samples = run.path, run.samples
    template = _judge_prompt(task, config)
    docs = {d.id: d for d in task.docs()}
    chat = ChatTemplate.load(checkpoint.model_path)
    prompts = []
    for s in samples:
        doc = docs.get(s.doc_id)
        if doc is None:
            raise EvalkitError(f"{folder}: doc {s.doc_id} is not in task {task.name}")
        fields = {k: task._render(config[k], doc.data) for k in ("question", "context")}
        user = template["user"].format(answer=task.target(doc), guess=s.completion.strip(),
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
    try:
        execution = cached_execute(keys, cache, Completion)
        replies = {i: completions[0].text for i, completions, _ in execution.results(
            lambda todo: backend.generate([requests[i] for i in todo]))}
    finally:
        if cache is not None:
            cache.close()
    judged = []
    for i, s in enumerate(samples):
        verdict = judge_verdict(replies[i])
        judged.append(s.model_copy(update={
            "scores": {**s.scores, "answer,judge": 0.0 if verdict is None else verdict,
                       "answer,judge_invalid": float(verdict is None)},
            "extracted": {**(s.extracted or {}), "judge": replies[i].strip()}}))
    added = aggregate([s.model_dump() for s in judged],
                      [Metric("answer,judge", "answer,judge"),
                       Metric("answer,judge_invalid", "answer,judge_invalid",
                              higher_is_better=False)])
    write_samples(folder, judged)
    write_metrics(folder, MetricsFile.model_validate(
        {**run.metrics.model_dump(), "metrics": {**run.metrics.model_dump()["metrics"], **added}}))
    write_header(folder, run.header.model_copy(update={"judge": {
        "checkpoint": checkpoint.describe(), "backend": backend.info(),
        "prompt": f"{config['prompt']}#{config['key']}",
        "prompt_hash": content_key(template=template)[:16], "max_tokens": MAX_TOKENS,
        "metrics": ["answer,judge", "answer,judge_invalid"],
        "counts": {"generated": len(execution.misses), "cached": len(execution.hits)}}}))
