"""`evalkit run`, `evalkit models`, `evalkit tasks`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evalkit.cli import options as o
from evalkit.cli.app import app
from evalkit.cli.options import backend_options, set_lm_eval_include, split_csv


@app.command()
def run(
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint: folder, adapter, "
                                       ".gguf, hub id or builtin:smollm2-135m")],
    task: o.Tasks = None,
    limit: o.Limit = None,
    backend: o.Backend = "vllm",
    out: Annotated[Path, typer.Option(help="Root folder for run folders.")] = Path("runs"),
    data_dir: o.DataDir = None,
    n: o.N = None,
    temperature: o.Temperature = None,
    top_p: o.TopP = None,
    max_tokens: o.MaxTokens = None,
    seed: o.Seed = 1234,
    no_cache: o.NoCache = False,
    sandbox: o.Sandbox = "process",
    workers: o.Workers = None,
    tensor_parallel_size: o.TensorParallel = 1,
    max_model_len: o.MaxModelLen = None,
    dtype: o.Dtype = "auto",
    batch_size: o.BatchSize = 16,
    base_url: o.BaseUrl = None,
    served_model_name: o.ServedModelName = None,
    judge: o.Judge = None,
    lm_eval_include: o.LmEvalInclude = None,
) -> None:
    """Run tasks on one checkpoint and write a run folder per task.

    Example: evalkit run -m builtin:smollm2-135m --tasks gsm8k --limit 20

    Output: one folder per task under --out (default runs/TASK/MODEL-KEY/: run.json,
    samples.jsonl, metrics.json).
    """
    from evalkit.run.runner import RunOptions, open_backend, run_task

    set_lm_eval_include(lm_eval_include)

    options = RunOptions(
        backend=backend, limit=limit, n=n, temperature=temperature, top_p=top_p,
        max_tokens=max_tokens, seed=seed, out_dir=out, data_dir=data_dir, use_cache=not no_cache,
        sandbox=sandbox, workers=workers,
        backend_options=backend_options(backend, tensor_parallel_size, max_model_len, dtype,
                                         batch_size, base_url, served_model_name),
    )
    options.validate()
    from evalkit.tasks.suites import expand_tasks

    if not split_csv(task):
        from evalkit.errors import EvalkitError

        raise EvalkitError("--tasks is required (e.g. --tasks gsm8k; `evalkit tasks` lists them)")
    tasks, suite_limits = expand_tasks(split_csv(task))  # a suite name stands for its tasks
    if limit is None:
        options.limits = suite_limits
    checkpoint = _checkpoint(model, backend, base_url)
    from evalkit.tasks import check_task

    for t in tasks:  # validate every task (and its data) before loading a model
        check_task(t, data_dir, options.limits.get(t, limit))
    folders = []
    with open_backend(checkpoint, options) as engine:
        for t in tasks:
            folders.append(run_task(checkpoint, t, options, backend=engine))
    if judge:  # after the model's engine is freed: the judge gets its own
        from evalkit.run.judge import judge_runs

        judge_runs(folders, judge, options)
    for folder in folders:
        print_run_summary(folder)


def _checkpoint(spec: str, backend: str, base_url: str | None):
    """Resolve the checkpoint; for a served model that is not local, fingerprint the server's
    model instead (results are then only as reproducible as the server)."""
    from evalkit.checkpoints import remote_checkpoint, resolve
    from evalkit.errors import EvalkitError

    try:
        return resolve(spec)
    except EvalkitError:
        if backend != "openai":
            raise
    return remote_checkpoint(spec, base_url or "")


def print_run_summary(folder: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from evalkit.run.format import load_run

    run = load_run(folder)
    header = run.header
    table = Table(title=f"{header.task.name} · {header.checkpoint.name} "
                        f"({header.backend.get('name')})")
    for col in ("metric", "value", "± stderr", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, m in run.metrics.metrics.items():
        table.add_row(name, _fmt(m.value), _fmt(m.stderr), str(m.n))
    console = Console()
    console.print(table)
    counts = header.counts
    console.print(f"[dim]{folder}  ·  generated {counts.get('generated', 0)}, "
                  f"cached {counts.get('cached', 0)}, resumed {counts.get('resumed', 0)}[/dim]")


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


@app.command()
def models() -> None:
    """List builtin models and checkpoints materialized in the cache."""
    from rich.console import Console
    from rich.table import Table

    from evalkit.checkpoints import BUILTINS, cached_models

    console = Console()
    table = Table(title="builtin models")
    table.add_column("spec")
    table.add_column("description")
    for name, b in BUILTINS.items():
        table.add_row(f"builtin:{name}", b.description)
    console.print(table)
    cached = Table(title="cached checkpoints")
    for col in ("name", "size (MB)", "path"):
        cached.add_column(col)
    for row in cached_models():
        cached.add_row(row["name"], str(row["size_mb"]), row["path"])
    console.print(cached)


@app.command(name="tasks")
def list_tasks_cmd() -> None:
    """List the available tasks."""
    from rich.console import Console
    from rich.table import Table

    from evalkit.tasks import list_tasks
    from evalkit.tasks.spec import load_spec

    table = Table(title="tasks")
    for col in ("name", "version", "description"):
        table.add_column(col)
    for name, path in list_tasks().items():
        spec = load_spec(path)
        table.add_row(name, spec.version, spec.description)
    Console().print(table)
    from evalkit.tasks.suites import suites

    suite_table = Table(title="suites (--task NAME runs them all)")
    for col in ("name", "tasks (default --limit)", "description"):
        suite_table.add_column(col)
    for name, suite in suites().items():
        suite_table.add_row(name, ", ".join(t if n is None else f"{t} ({n})"
                                            for t, n in suite["tasks"].items()),
                            suite["description"])
    Console().print(suite_table)
