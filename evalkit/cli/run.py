"""`evalkit run`, `evalkit models`, `evalkit tasks`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evalkit.cli.app import app


def split_csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def run(
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint: folder, adapter, "
                                       ".gguf, hub id or builtin:smollm2-135m")],
    task: Annotated[str, typer.Option("--task", "-t", help="Task name(s), comma-separated")],
    limit: Annotated[int | None, typer.Option(help="Only the first N items")] = None,
    backend: Annotated[str, typer.Option(help="vllm | hf | openai")] = "vllm",
    out: Annotated[Path, typer.Option(help="Root folder for run folders")] = Path("runs"),
    data_dir: Annotated[Path | None, typer.Option(help="Local benchmark data "
                                                  "(default: $EVALKIT_DATA_DIR, else the hub)")
                        ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Samples per item")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Max new tokens per sample")] = None,
    seed: Annotated[int, typer.Option()] = 1234,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore cached generations")
                        ] = False,
    sandbox: Annotated[str, typer.Option(help="process | docker | none (code tasks)")
                       ] = "process",
    workers: Annotated[int | None, typer.Option(help="Parallel code executions")] = None,
    tensor_parallel_size: Annotated[int, typer.Option("--tp", help="vLLM tensor parallel size")
                                    ] = 1,
    max_model_len: Annotated[int | None, typer.Option(help="vLLM context length")] = None,
    dtype: Annotated[str, typer.Option(help="Model dtype (auto, float32, bfloat16...)")] = "auto",
    batch_size: Annotated[int, typer.Option(help="hf backend batch size")] = 16,
    base_url: Annotated[str | None, typer.Option(help="openai backend: server URL (…/v1)")
                        ] = None,
    served_model_name: Annotated[str | None, typer.Option(help="openai backend: model name")
                                 ] = None,
    judge: Annotated[str | None, typer.Option(
        help="Also grade answers with this checkpoint (tasks with a judge prompt: FineTuneBench)")
    ] = None,
    lm_eval_include: Annotated[str | None, typer.Option(
        help="Folder(s) of lm-eval task YAMLs for lm_eval:NAME tasks (local data)")] = None,
) -> None:
    """Run tasks on one checkpoint and write a run folder per task."""
    from evalkit.runner import RunOptions, open_backend, run_task

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
        from evalkit.judge import judge_runs

        judge_runs(folders, judge, options)
    for folder in folders:
        print_run_summary(folder)


def set_lm_eval_include(paths: str | None) -> None:
    """--lm-eval-include: lm_eval:NAME tasks also come from these folders (os.pathsep list)."""
    if paths:
        import os

        from evalkit.tasks.lm_eval import INCLUDE_ENV

        os.environ[INCLUDE_ENV] = os.pathsep.join(str(Path(p).resolve())
                                                  for p in paths.split(os.pathsep) if p)


def backend_options(backend: str, tp: int, max_model_len: int | None, dtype: str,
                     batch_size: int, base_url: str | None, served: str | None) -> dict:
    if backend == "vllm":
        return {"tensor_parallel_size": tp, "max_model_len": max_model_len, "dtype": dtype}
    if backend == "hf":
        return {"batch_size": batch_size, "dtype": dtype}
    if backend == "openai":
        return {"base_url": base_url, "served_model_name": served}
    from evalkit.errors import EvalkitError

    raise EvalkitError(f"unknown backend '{backend}' (choose vllm, hf or openai)")


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

    from evalkit.store import load_run

    run, _, metrics = load_run(folder)
    table = Table(title=f"{run['task']['name']} · {run['checkpoint']['name']} "
                        f"({run['backend']['name']})")
    for col in ("metric", "value", "± stderr", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, m in metrics["metrics"].items():
        table.add_row(name, _fmt(m["value"]), _fmt(m["stderr"]), str(m["n"]))
    console = Console()
    console.print(table)
    counts = run.get("counts", {})
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
