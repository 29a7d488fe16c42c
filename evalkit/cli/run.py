"""`evalkit run`, `evalkit models`, `evalkit tasks`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evalkit.cli import options as o
from evalkit.cli.app import app
from evalkit.cli.options import set_lm_eval_include, split_csv


@app.command()
@o.with_engine_options
def run(
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint: folder, adapter, "
                                       ".gguf, .ckpt/.pt/.pth/.bin state dict, hub id or "
                                       "builtin:smollm2-135m")],
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
    engine: o.EngineOptions = o.EngineOptions(),
    judge: o.Judge = None,
    publish: o.Publish = None,
    config: o.StateDictConfig = None,
    lm_eval_include: o.LmEvalInclude = None,
    shard: o.Shard = None,
    ray: o.Ray = None,
    replicas: o.Replicas = 1,
    verbose: o.Verbose = False,
) -> None:
    """Run tasks on one checkpoint and write a run folder per task.

    Example: evalkit run -m builtin:smollm2-135m --tasks gsm8k --limit 20

    Output: one folder per task under --out (default runs/TASK/MODEL-KEY/: run.json,
    samples.jsonl, metrics.json).
    """
    from evalkit.errors import EvalkitError
    from evalkit.run.runner import RunOptions, open_backend, run_task
    from evalkit.scale.shard import parse_shard

    set_lm_eval_include(lm_eval_include)

    options = RunOptions(
        backend=backend, limit=limit, n=n, temperature=temperature, top_p=top_p,
        max_tokens=max_tokens, seed=seed, out_dir=out, data_dir=data_dir,
        **engine.run_options(backend),
        shard=parse_shard(shard) if shard else None, ray=ray, replicas=replicas,
    )
    options.validate()
    if shard and (judge or publish is not None):
        raise EvalkitError("--judge and --publish take whole runs: merge the shards with "
                           "`evalkit merge`, then judge or publish the merged folders")
    from evalkit.paths import writable_folder

    writable_folder(out, "--out")
    from evalkit.tasks.suites import expand_tasks

    if not split_csv(task):
        if task is None:
            raise EvalkitError(
                "--tasks is required (e.g. --tasks gsm8k; `evalkit tasks` lists them)")
        raise EvalkitError(f"--task names no task ({task!r}); see `evalkit tasks`")
    tasks, suite_limits = expand_tasks(split_csv(task))  # a suite name stands for its tasks
    if limit is None:
        options.limits = suite_limits
    checkpoint = _checkpoint(model, backend, engine.base_url, config)
    from evalkit.tasks import check_task

    for t in tasks:  # validate every task (and its data) before loading a model
        check_task(t, data_dir, options.limits.get(t, limit))
    folders = []
    from evalkit.models.engine_log import log_into

    with log_into(None if verbose else out):  # the engines' own output: out/engine.log
        with open_backend(checkpoint, options) as engine:
            for t in tasks:
                folders.append(run_task(checkpoint, t, options, backend=engine))
        if judge:  # after the model's engine is freed: the judge gets its own
            from evalkit.run.judge import judge_runs

            judge_runs(folders, judge, options)
    for folder in folders:
        if shard:
            print(f"shard {shard}: {folder}")
        else:
            print_run_summary(folder)
    if publish is not None:
        from evalkit.cli.report import print_published, publish_paths

        print_published(publish_paths(folders, publish))


def _checkpoint(spec: str, backend: str, base_url: str | None, config: str | None = None):
    """Resolve the checkpoint; for a served model that is not local, fingerprint the server's
    model instead (results are then only as reproducible as the server)."""
    from evalkit.checkpoints import remote_checkpoint, resolve
    from evalkit.errors import EvalkitError

    try:
        return resolve(spec, config=config)
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
def list_tasks_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print tasks and suites as JSON.")
                       ] = False,
) -> None:
    """List the available tasks and suites. Piped, one tab-separated line per task (full
    names, for grep); a task file that does not load is one warning line, the rest still list."""
    import json
    import sys

    from evalkit.errors import EvalkitError
    from evalkit.tasks import list_tasks
    from evalkit.tasks.spec import load_spec
    from evalkit.tasks.suites import suites

    tasks, problems = [], []
    for name, path in list_tasks().items():
        try:
            spec = load_spec(path)
        except EvalkitError as exc:
            problems.append(str(exc))
            continue
        tasks.append({"name": name, "version": spec.version, "description": spec.description,
                      "file": str(path)})
    try:
        found = suites()
    except EvalkitError as exc:
        problems.append(str(exc))
        found = {}
    groups = [{"name": name, "description": suite["description"], "tasks": suite["tasks"]}
              for name, suite in found.items()]
    for problem in problems:
        print(f"warning: {' '.join(problem.split())}", file=sys.stderr)
    if as_json:
        print(json.dumps({"tasks": tasks, "suites": groups}, indent=1))
        return
    members = {g["name"]: ", ".join(t if n is None else f"{t} ({n})"
                                    for t, n in g["tasks"].items()) for g in groups}
    if not sys.stdout.isatty():
        for t in tasks:
            print(f"{t['name']}\t{t['version']}\t{t['description']}")
        for g in groups:
            print(f"{g['name']}\tsuite: {members[g['name']]}\t{g['description']}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tasks")
    table.add_column("name", overflow="fold")  # squeeze the description, never cut a name
    for col in ("version", "description"):
        table.add_column(col)
    for t in tasks:
        table.add_row(t["name"], t["version"], t["description"])
    Console().print(table)
    suite_table = Table(title="suites (--task NAME runs them all)")
    suite_table.add_column("name", overflow="fold")
    for col in ("tasks (default --limit)", "description"):
        suite_table.add_column(col)
    for g in groups:
        suite_table.add_row(g["name"], members[g["name"]], g["description"])
    Console().print(suite_table)
