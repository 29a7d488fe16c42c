"""The command-line options shared by the commands: one definition each, so `run`, `compare`
and `check` spell, document and default them the same way."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer

_GEN = "Generation"
_ENGINE = "Engine"
_STATS = "Statistics"
_SCALE = "Scale-out"

Tasks = Annotated[str | None, typer.Option(
    "--tasks", "--task", "-t",
    help="Comma-separated task or suite names, e.g. humaneval,gsm8k (`evalkit tasks` lists them).")]
Limit = Annotated[int | None, typer.Option(help="Only the first N items of each task.")]
DataDir = Annotated[Path | None, typer.Option(
    help="Local benchmark data [default: $EVALKIT_DATA_DIR, else the HF hub].")]
Backend = Annotated[str, typer.Option(help="Generation backend: vllm, hf or openai.",
                                      rich_help_panel=_ENGINE)]
N = Annotated[int | None, typer.Option("--n", help="Samples per item (pass@k) [default: the "
                                       "task's].", rich_help_panel=_GEN)]
Temperature = Annotated[float | None, typer.Option(
    help="Sampling temperature (needed with --n > 1) [default: the task's].",
    rich_help_panel=_GEN)]
TopP = Annotated[float | None, typer.Option(help="Nucleus sampling [default: the task's].",
                                            rich_help_panel=_GEN)]
MaxTokens = Annotated[int | None, typer.Option(help="Max new tokens per sample [default: the "
                                               "task's].", rich_help_panel=_GEN)]
Seed = Annotated[int, typer.Option(help="Generation seed (sampled decoding).",
                                   rich_help_panel=_GEN)]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Ignore cached generations.")]
Sandbox = Annotated[str, typer.Option(help="Code tasks: process | docker | none.")]
AllowWeakerIsolation = Annotated[bool, typer.Option(
    help="Run code even where the sandbox can make no cgroup (memfd/tmpfs memory and child "
         "CPU time then unlimited); warned, and recorded in run.json.")]
Workers = Annotated[int | None, typer.Option(help="Parallel code executions.")]
TensorParallel = Annotated[int, typer.Option("--tp", help="vLLM tensor parallel size.",
                                             rich_help_panel=_ENGINE)]
MaxModelLen = Annotated[int | None, typer.Option(help="vLLM context length.",
                                                 rich_help_panel=_ENGINE)]
Dtype = Annotated[str, typer.Option(help="Model dtype (auto = as stored, float32, bfloat16...).",
                                    rich_help_panel=_ENGINE)]
BatchSize = Annotated[int, typer.Option(help="hf backend batch size.", rich_help_panel=_ENGINE)]
BaseUrl = Annotated[str | None, typer.Option(help="openai backend: server URL (…/v1).",
                                             rich_help_panel=_ENGINE)]
ServedModelName = Annotated[str | None, typer.Option(
    help="openai backend: the model name the server knows [default: the checkpoint's].",
    rich_help_panel=_ENGINE)]
StateDictConfig = Annotated[str | None, typer.Option(
    "--config", help="Architecture + tokenizer of .ckpt/.pt/.pth/.bin state dicts: a model folder, "
    "hub id or builtin:smollm2-135m [default: config.json beside the file; compare/analyze/edit: "
    "TUNED takes BASE's].")]
Judge = Annotated[str | None, typer.Option(
    help="Also grade answers with this checkpoint (tasks with a judge prompt: FineTuneBench).")]
LmEvalInclude = Annotated[str | None, typer.Option(
    help="Folder(s) of lm-eval task YAMLs for lm_eval:NAME tasks (local data; os.pathsep list).")]
Shard = Annotated[str | None, typer.Option(
    help="Only shard i of N of the items, e.g. $SLURM_ARRAY_TASK_ID/8; join the shards with "
         "`evalkit merge`.", rich_help_panel=_SCALE)]
Ray = Annotated[str | None, typer.Option(
    "--ray", help="Run on Ray: 'local' starts a cluster here, 'auto' joins the one `ray start` "
                  "made, or a cluster address (ray://head:10001).", rich_help_panel=_SCALE)]
Replicas = Annotated[int, typer.Option(help="--ray: engine replicas (each with --tp GPUs).",
                                       rich_help_panel=_SCALE)]
Alpha = Annotated[float, typer.Option(help="Significance level (Holm-corrected across rows).",
                                      rich_help_panel=_STATS)]
ResampleSeed = Annotated[int, typer.Option(help="Seed of the bootstrap/permutation resampling.",
                                           rich_help_panel=_STATS)]
Publish = Annotated[Path | None, typer.Option(
    "--publish", help="Also publish the finished runs (and the comparison) into this results "
    "store, e.g. results/ (see `evalkit publish`).")]
Verbose = Annotated[bool, typer.Option(
    "--verbose", help="Show the engine's own logs (vLLM, transformers, torch) on the terminal "
    "instead of writing them to engine.log beside the runs.")]


@dataclass(frozen=True)
class EngineOptions:
    """The sandbox and engine options that `run` and `compare` share, in their order in --help,
    with their defaults (``with_engine_options`` gives a command these parameters)."""

    no_cache: NoCache = False
    sandbox: Sandbox = "process"
    allow_weaker_isolation: AllowWeakerIsolation = False
    workers: Workers = None
    tensor_parallel_size: TensorParallel = 1
    max_model_len: MaxModelLen = None
    dtype: Dtype = "auto"
    batch_size: BatchSize = 16
    base_url: BaseUrl = None
    served_model_name: ServedModelName = None

    def run_options(self, backend: str) -> dict[str, Any]:
        """What these options set in ``RunOptions`` for ``backend``."""
        return {"use_cache": not self.no_cache, "sandbox": self.sandbox,
                "allow_weaker_isolation": self.allow_weaker_isolation, "workers": self.workers,
                "backend_options": backend_options(
                    backend, self.tensor_parallel_size, self.max_model_len, self.dtype,
                    self.batch_size, self.base_url, self.served_model_name)}


def with_engine_options(command: Callable[..., None]) -> Callable[..., None]:
    """Put the ``EngineOptions`` parameters where ``command`` has its ``engine`` parameter (so
    typer shows them there) and call ``command`` with them gathered into ``engine``."""
    names = [f.name for f in fields(EngineOptions)]
    annotations = inspect.get_annotations(EngineOptions, eval_str=True)
    # keyword-only, all of them: typer (click) calls a command with keywords only
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                annotation=annotations[f.name]) for f in fields(EngineOptions)]
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        parameters += shared if p.name == "engine" else [p.replace(kind=p.KEYWORD_ONLY)]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        engine = EngineOptions(**{name: kwargs.pop(name) for name in names})
        command(engine=engine, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return wrapper


def split_csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def backend_options(backend: str, tp: int, max_model_len: int | None, dtype: str,
                    batch_size: int, base_url: str | None, served: str | None) -> dict[str, object]:
    """The engine options of ``backend`` (what run.json records and the cache key includes)."""
    if backend == "vllm":
        return {"tensor_parallel_size": tp, "max_model_len": max_model_len, "dtype": dtype}
    if backend == "hf":
        return {"batch_size": batch_size, "dtype": dtype}
    if backend == "openai":
        return {"base_url": base_url, "served_model_name": served}
    from evalkit.errors import EvalkitError

    raise EvalkitError(f"unknown backend '{backend}' (choose vllm, hf or openai)")


def set_lm_eval_include(paths: str | None) -> None:
    """--lm-eval-include: lm_eval:NAME tasks also come from these folders. lm-eval's task manager
    is built deep inside the run, so the folders travel in the environment variable it reads."""
    if paths:
        import os

        from evalkit.tasks.lm_eval import INCLUDE_ENV

        os.environ[INCLUDE_ENV] = os.pathsep.join(str(Path(p).resolve())
                                                  for p in paths.split(os.pathsep) if p)
