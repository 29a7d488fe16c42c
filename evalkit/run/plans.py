"""One plan per request kind: what to ask the backend for an item, its cache key, and how the
answer becomes scored samples.

- ``GeneratePlan``: ``generate_until`` tasks, one ``GenRequest`` (n samples) per item;
- ``LoglikelihoodPlan``: ``multiple_choice`` / ``loglikelihood_rolling`` tasks, one
  ``LoglikelihoodRequest`` per choice (or per document), one sample per item.

The judge (``evalkit.run.judge``) asks greedy generations of a second model through the same
``store.cached_execute``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError
from evalkit.models import Backend, Completion, GenRequest
from evalkit.models.base import Loglikelihood, LoglikelihoodRequest
from evalkit.progress import console
from evalkit.run.format import Sample
from evalkit.run.store import content_key
from evalkit.scoring import ScoreInput
from evalkit.tasks import Doc, Task


@dataclass
class Pending:
    """An item still (partly) to be scored."""

    doc: Doc
    prompt: str
    request: Any  # GenRequest | list[LoglikelihoodRequest]
    cache_key: str
    missing: list[int]  # sample indices not yet in samples.jsonl


@dataclass
class GeneratePlan:
    task: Task
    checkpoint: Checkpoint
    settings: dict[str, Any]  # run.json's "generation"
    key_parts: dict[str, Any]  # checkpoint, backend, backend version and options
    seed: int
    result_type: type = Completion

    def pending(self, doc: Doc, prompt: str, missing: list[int]) -> Pending:
        gen = self.settings
        request = GenRequest(prompt=prompt, max_tokens=gen["max_tokens"], stop=tuple(gen["until"]),
                             temperature=gen["temperature"], top_p=gen["top_p"], n=gen["n"],
                             seed=request_seed(self.seed, doc.id), item=doc.id,
                             adapter=self.checkpoint if self.checkpoint.kind == "adapter"
                             else None)
        key = content_key(**self.key_parts, prompt=prompt, generation=gen, seed=request.seed)
        return Pending(doc, prompt, request, key, missing)

    def execute(self, backend: Backend, requests: list[GenRequest]
                ) -> Iterator[tuple[int, list[Completion]]]:
        return backend.generate(requests)

    def jobs(self, p: Pending, completions: list[Completion], sandbox: Any
             ) -> list[Callable[[], Sample]]:
        target = self.task.target(p.doc)
        def job(i: int) -> Callable[[], Sample]:
            return lambda: self._score(p, i, completions[i], target, sandbox)

        return [job(i) for i in p.missing]

    def _score(self, p: Pending, i: int, c: Completion, target: str, sandbox: Any) -> Sample:
        score = self.task.scorer(ScoreInput(doc=p.doc.data, prompt=p.prompt, completion=c.text,
                                            target=target, sandbox=sandbox))
        return Sample(
            doc_id=p.doc.id, sample_idx=i, prompt_hash=content_key(p=p.prompt)[:16],
            prompt=p.prompt, target=score.target if score.target is not None else target,
            completion=c.text, finish_reason=c.finish_reason,
            n_prompt_tokens=c.n_prompt_tokens, n_completion_tokens=c.n_completion_tokens,
            extracted=score.extracted, scores=score.values, execution=score.execution)


@dataclass
class LoglikelihoodPlan:
    task: Task
    checkpoint: Checkpoint
    settings: dict[str, Any]
    key_parts: dict[str, Any]
    result_type: type = Loglikelihood

    def pending(self, doc: Doc, prompt: str, missing: list[int]) -> Pending:
        gen = self.settings
        adapter = self.checkpoint if self.checkpoint.kind == "adapter" else None
        request = [LoglikelihoodRequest(context=context, continuation=continuation,
                                        max_length=gen["max_length"], item=doc.id,
                                        rolling=gen["output_type"] == "loglikelihood_rolling",
                                        adapter=adapter)
                   for context, continuation in self.task.loglikelihood_pairs(doc, prompt)]
        key = content_key(**self.key_parts, generation=gen,
                          pairs=[(r.context, r.continuation) for r in request])
        return Pending(doc, prompt, request, key, missing)

    def execute(self, backend: Backend, per_doc: list[list[LoglikelihoodRequest]]
                ) -> Iterator[tuple[int, list[Loglikelihood]]]:
        """All docs' requests to the backend at once; each doc is handed back when its last
        request finishes."""
        flat = [(i, r) for i, requests in enumerate(per_doc) for r in requests]
        results: dict[int, dict[int, Loglikelihood]] = {i: {} for i in range(len(per_doc))}
        first: dict[int, int] = {}
        for k, (i, _) in enumerate(flat):
            first.setdefault(i, k)
        for k, result in backend.loglikelihood([r for _, r in flat]):
            i = flat[k][0]
            results[i][k - first[i]] = result
            if len(results[i]) == len(per_doc[i]):
                yield i, [results[i][j] for j in range(len(per_doc[i]))]

    def jobs(self, p: Pending, results: list[Loglikelihood], sandbox: Any
             ) -> list[Callable[[], Sample]]:
        return [lambda: self._score(p, results)]

    def _score(self, p: Pending, results: list[Loglikelihood]) -> Sample:
        from evalkit.scoring.loglikelihood import LoglikelihoodInput

        task, continuations = self.task, [r.continuation for r in p.request]
        mc = task.spec.output_type == "multiple_choice"
        choices = task.choices(p.doc.data) if mc else None
        scorer: Any = task.scorer  # a LoglikelihoodScorer (checked by loglikelihood_settings)
        score = scorer.score_loglikelihood(LoglikelihoodInput(
            doc=p.doc.data, continuations=continuations, results=results, choices=choices,
            gold=task.gold(p.doc.data) if mc else None))
        best = max(range(len(results)), key=lambda j: (results[j].logprob, -j))
        return Sample(
            doc_id=p.doc.id, sample_idx=0,
            # The continuations are part of what is asked: changed choices must not pair.
            prompt_hash=content_key(p=p.prompt, continuations=continuations)[:16],
            prompt=p.prompt,
            target=score.target if score.target is not None else task.target(p.doc),
            completion=continuations[best] if mc else "", finish_reason=None,
            n_prompt_tokens=None, n_completion_tokens=sum(r.n_tokens for r in results),
            extracted=score.extracted, scores=score.values, execution=None,
            loglikelihoods=[{"continuation": c if mc else None, **vars(r)}
                            for c, r in zip(continuations, results, strict=True)])


def make_plan(task: Task, checkpoint: Checkpoint, options: Any, key_parts: dict[str, Any]
              ) -> GeneratePlan | LoglikelihoodPlan:
    """The plan for a task's ``output_type`` (``options``: an ``evalkit.run.runner.RunOptions``)."""
    if task.spec.output_type == "generate_until":
        return GeneratePlan(task, checkpoint, generation_settings(task, options), key_parts,
                            options.seed)
    return LoglikelihoodPlan(task, checkpoint, loglikelihood_settings(task, checkpoint, options),
                             key_parts)


def generation_settings(task: Task, options: Any) -> dict[str, Any]:
    g = task.generation
    gen: dict[str, Any] = {
        "max_tokens": options.max_tokens or g.max_tokens,
        "temperature": g.temperature if options.temperature is None else options.temperature,
        "top_p": g.top_p if options.top_p is None else options.top_p,
        "n": options.n or g.n,
        "until": list(g.until),
    }
    if gen["n"] > 1 and gen["temperature"] == 0:
        console.print("[yellow]warning:[/yellow] --n > 1 with greedy decoding gives identical "
                      "samples; pass --temperature (e.g. 0.2)")
    return gen


def loglikelihood_settings(task: Task, checkpoint: Checkpoint, options: Any) -> dict[str, Any]:
    """What run.json records as the "generation" of a loglikelihood task (and pairs on)."""
    from evalkit.scoring.loglikelihood import LoglikelihoodScorer

    if not isinstance(task.scorer, LoglikelihoodScorer):
        raise EvalkitError(f"task {task.name}: output_type {task.spec.output_type} needs a "
                           "loglikelihood scorer (multiple_choice or perplexity)")
    if options.backend == "openai":  # before a run folder exists
        raise EvalkitError(f"task {task.name} scores loglikelihoods, which the openai backend "
                           "cannot; use --backend vllm or hf")
    return {"output_type": task.spec.output_type, "n": 1,
            "max_length": task.spec.max_length or context_length(checkpoint, options) - 2}


def context_length(checkpoint: Checkpoint, options: Any) -> int:
    """The model's context (or the engine's --max-model-len). A window (max_length + 1 tokens)
    leaves room for the one token vLLM must generate, so vLLM scores exactly what transformers
    scores."""
    if options.backend_options.get("max_model_len"):
        return int(options.backend_options["max_model_len"])
    config_file = checkpoint.model_path / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return 2048  # lm-eval's default when a model does not say


def request_seed(seed: int, doc_id: str) -> int:
    """A per-request seed: sampled runs are reproducible whatever the batch composition."""
    return int(content_key(seed=seed, doc=doc_id)[:8], 16)
