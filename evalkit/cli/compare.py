"""`evalkit compare` and `evalkit check` (logic in evalkit.compare; this module only parses,
calls and prints)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from evalkit.cli import options as o
from evalkit.cli.app import app
from evalkit.cli.options import set_lm_eval_include

_STATS = "Statistics"


def _task_list(tasks: str | None) -> list[str] | None:
    if not tasks:
        return None
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    return names or None


def _console():
    from rich.console import Console

    console = Console()
    # Piped into a CI log, rich assumes 80 columns and squashes the table; logs have room.
    return console if console.is_terminal else Console(width=180)


def _same(base: str, tuned: str) -> bool:
    """The same checkpoint or run folder, however spelled (./x, x/, an absolute path)."""
    if base == tuned:
        return True
    a, b = Path(base).expanduser(), Path(tuned).expanduser()
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


@app.command()
@o.with_engine_options
def compare(
    base: Annotated[str, typer.Argument(help="BASE checkpoint, or a run folder / folder of runs.")],
    tuned: Annotated[str, typer.Argument(
        help="TUNED checkpoint (e.g. a LoRA adapter of BASE), or a run folder / folder of runs.")],
    tasks: o.Tasks = None,
    runs: Annotated[bool, typer.Option(
        "--runs", help="BASE and TUNED are finished run folders (detected when they are).")
    ] = False,
    limit: o.Limit = None,
    n: o.N = None,
    temperature: o.Temperature = None,
    top_p: o.TopP = None,
    max_tokens: o.MaxTokens = None,
    seed: o.Seed = 1234,
    backend: o.Backend = "vllm",
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where the two checkpoints' run "
                                           "folders go (reused when already there).")
                        ] = Path("runs"),
    engine: o.EngineOptions = o.EngineOptions(),
    data_dir: o.DataDir = None,
    out: Annotated[Path | None, typer.Option(
        help="Folder for comparison.json and comparison.md [default: out/compare/BASE-vs-TUNED]")
    ] = None,
    alpha: o.Alpha = 0.05,
    confidence: Annotated[float, typer.Option(help="Confidence level of the CI of Δ.",
                                              rich_help_panel=_STATS)] = 0.95,
    resamples: Annotated[int, typer.Option(help="Bootstrap / permutation resamples.",
                                           rich_help_panel=_STATS)] = 10_000,
    resample_seed: o.ResampleSeed = 0,
    continuous_test: Annotated[str, typer.Option(
        help="Test for non-binary per-item values: permutation or wilcoxon.",
        rich_help_panel=_STATS)] = "permutation",
    judge: o.Judge = None,
    tuco: Annotated[bool, typer.Option(
        "--tuco", help="Also report each task's mean TuCo (tuning contribution, transformers).")
    ] = False,
    publish: o.Publish = None,
    allow_same: Annotated[bool, typer.Option(
        "--allow-same", help="Compare BASE with itself (e.g. to see the noise floor).")
    ] = False,
    config: o.StateDictConfig = None,
    lm_eval_include: o.LmEvalInclude = None,
    shard: o.Shard = None,
    ray: o.Ray = None,
    replicas: o.Replicas = 1,
    verbose: o.Verbose = False,
) -> None:
    """Pair BASE and TUNED item by item: Δ, paired CI (Newcombe for 0/1 items, else
    bootstrap), McNemar/permutation test,
    Holm-corrected verdicts, and the items that flipped. Always exits 0 on success; gate CI with
    `evalkit check`.

    Example: evalkit compare builtin:smollm2-135m out/tuned --tasks gsm8k,humaneval --limit 50

    Output: comparison.json and comparison.md in --out (default out/compare/BASE-vs-TUNED/);
    the checkpoints' run folders under --runs-dir (default runs/).
    """
    from evalkit.compare.load import is_run_source
    from evalkit.compare.render import comparison_table, write_comparison
    from evalkit.compare.rows import check_stats_options, compare_paths
    from evalkit.errors import EvalkitError

    set_lm_eval_include(lm_eval_include)
    if continuous_test not in ("permutation", "wilcoxon"):
        raise EvalkitError(f"--continuous-test must be permutation or wilcoxon, "
                           f"not {continuous_test!r}")
    stats_options = {"alpha": alpha, "confidence": confidence, "resamples": resamples,
                     "seed": resample_seed, "continuous_test": continuous_test}
    check_stats_options(**stats_options)
    if _same(base, tuned):
        if not allow_same:
            raise EvalkitError(f"BASE and TUNED are the same ({base}): every Δ would be 0; "
                               "pass --allow-same to compare it with itself anyway")
        print(f"warning: comparing {base} with itself (--allow-same)", file=sys.stderr)
    task_names = _task_list(tasks)
    suite_limits: dict[str, int] = {}
    if task_names:  # a suite name stands for its tasks (and their default limits)
        from evalkit.tasks.suites import expand_tasks

        task_names, suite_limits = expand_tasks(task_names)
    sources = (is_run_source(base), is_run_source(tuned))
    if sources[0] != sources[1] and not runs:
        which = "BASE" if sources[0] else "TUNED"
        raise EvalkitError(f"{which} is a run folder but the other argument is not; compare two "
                           "run folders (--runs) or two checkpoints (--tasks ...)")
    if runs or all(sources):
        for side, value in (("BASE", base), ("TUNED", tuned)):
            if not is_run_source(value):
                raise EvalkitError(f"--runs: {side} {value} is not a run folder, a folder of "
                                   "run folders or a comparison.json")
        if any(v is not None for v in (limit, n, temperature, top_p, max_tokens, judge, config,
                                       shard, ray)) or tuco:
            raise EvalkitError("--limit, --n, --temperature, --top-p, --max-tokens, --judge, "
                               "--config, --tuco, --shard and --ray "
                               "apply when running checkpoints; these run folders are already "
                               "finished")
        try:
            comparison = compare_paths(base, tuned, task_names, **stats_options)
            out = out or Path("out") / "compare" / (
                f"{_slug(comparison.base_label)}-vs-{_slug(comparison.tuned_label)}")
            json_path, md_path = write_comparison(comparison, out)
        except EvalkitError:
            raise
        except Exception as exc:  # bad input is one line and exit 2, never a traceback
            raise EvalkitError(f"compare failed: {type(exc).__name__}: {exc}") from None
    else:
        if not task_names:
            raise EvalkitError("--tasks is required when BASE and TUNED are checkpoints "
                               "(e.g. --tasks humaneval,gsm8k)")
        # The runner owns generation; it is imported only on this path (torch, vllm).
        from evalkit.compare.orchestrate import compare_checkpoints, resolve_pair, run_pair
        from evalkit.models.engine_log import log_into
        from evalkit.paths import writable_folder
        from evalkit.run.runner import RunOptions
        from evalkit.scale.shard import parse_shard

        given = {"backend": backend, "limit": limit, "n": n, "temperature": temperature,
                 "top_p": top_p, "max_tokens": max_tokens, "data_dir": data_dir, "seed": seed}
        options = RunOptions(**{k: v for k, v in given.items() if v is not None},
                             out_dir=runs_dir, limits={} if limit is not None else suite_limits,
                             **engine.run_options(backend),
                             shard=parse_shard(shard) if shard else None, ray=ray,
                             replicas=replicas)
        if shard:  # a shard's items alone are not comparable: run them, merge later
            if judge or tuco or publish is not None:
                raise EvalkitError("--judge, --tuco and --publish need whole runs: merge the "
                                   "shards, then `evalkit compare --runs`")
            writable_folder(runs_dir, "--runs-dir")
            pair = resolve_pair(base, tuned, options, config)
            with log_into(None if verbose else runs_dir):
                folders = run_pair(*pair, task_names, options)
            for task, (base_run, tuned_run) in folders.items():
                print(f"shard {shard} · {task}: {base_run}  {tuned_run}")
            return
        out = out or Path("out") / "compare" / f"{_slug(base)}-vs-{_slug(tuned)}"
        writable_folder(runs_dir, "--runs-dir")  # before hours of generation, not after
        writable_folder(out, "--out")
        with log_into(None if verbose else runs_dir):  # the engines' output: engine.log
            comparison = compare_checkpoints(base, tuned, task_names, options, out, judge=judge,
                                             tuco=tuco, config=config, **stats_options)
        json_path, md_path = out / "comparison.json", out / "comparison.md"
    console = _console()
    console.print(comparison_table(comparison))
    if comparison.recovery:
        from evalkit.compare.recovery import recovery_table

        console.print(recovery_table(comparison.recovery))
    for note in comparison.notes:
        console.print(f"[yellow]note:[/] {note}")
    flipped = sum(len(t.flipped) for t in comparison.tasks)
    console.print(f"{flipped} flipped item(s) with both completions: {md_path}\n"
                  f"comparison: {json_path}")
    if publish is not None:
        from evalkit.cli.report import print_published, publish_paths

        print_published(publish_paths([json_path.parent], publish))


def _gate_error(exc: Exception, junit: Path | None) -> Exception:
    """The EvalkitError (exit 2) for a gate that could not decide, after writing its JUnit.

    EvalkitErrors carry their own message; anything else is a bug or an OS error, still
    reported as "could not decide" (exit 2), never as exit 1, which means "regression".
    """
    from evalkit.errors import EvalkitError

    if isinstance(exc, EvalkitError):
        error = exc
    else:
        error = EvalkitError(f"the gate could not decide: {type(exc).__name__}: {exc}")
    if junit is not None:  # CI still shows why the gate broke
        from evalkit.compare import gate

        try:
            gate.write_junit(" ".join(str(error).split()), junit)
        except OSError as write_error:
            error = EvalkitError(f"{error}; and the JUnit file {junit} could not be written "
                                 f"({write_error})")
    return error


@app.command()
def check(
    candidate: Annotated[str, typer.Argument(
        help="New results: a run folder, a folder of run folders, or a comparison.json.")],
    baseline: Annotated[str | None, typer.Option(
        help="Reference: a run folder (or folder of runs), a comparison.json (its tuned side) "
             "or a baseline file written by --write-baseline.")] = None,
    max_drop: Annotated[float, typer.Option(
        help="Tolerated drop in percentage points of the metric (1.0 = 0.01 accuracy).")
    ] = 1.0,
    alpha: o.Alpha = 0.05,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write a Markdown summary here.")] = None,
    tasks: o.Tasks = None,
    resample_seed: o.ResampleSeed = 0,
    write_baseline: Annotated[Path | None, typer.Option(
        "--write-baseline", help="Write CANDIDATE as a baseline file to this path and exit "
                                 "(e.g. results/baseline-main.json).")] = None,
) -> None:
    """CI gate: exit 1 only when a metric drops by more than --max-drop percentage points with
    Holm-corrected significance; 0 otherwise; 2 when the gate cannot decide (bad baseline).

    Example: evalkit check runs/ --baseline results/baseline-main.json --junit gate.xml

    Output: the verdict on the terminal and the exit code; files only where --junit,
    --markdown or --write-baseline name them.
    """
    from evalkit.compare import gate

    console = _console()
    if write_baseline is not None:
        path = gate.write_baseline(candidate, write_baseline)
        console.print(f"baseline written: {path}")
        return
    try:
        result = gate.run_gate(candidate, baseline, max_drop=max_drop, alpha=alpha,
                               tasks=_task_list(tasks), seed=resample_seed)
    except Exception as exc:  # anything but a decided regression is exit 2, never 1
        raise _gate_error(exc, junit) from None
    console.print(gate.gate_table(result))
    for note in result.comparison.notes:
        console.print(f"[yellow]note:[/] {note}")
    for row in result.failed:
        console.print(f"[bold red]FAIL[/] {row.message}", highlight=False)
    for row in result.untested:
        console.print(f"[yellow]UNTESTED[/] {row.message}", highlight=False)
    try:
        if junit is not None:
            gate.write_junit(result, junit)
        if markdown is not None:
            markdown.parent.mkdir(parents=True, exist_ok=True)
            markdown.write_text(gate.gate_markdown(result), encoding="utf-8")
    except Exception as exc:
        raise _gate_error(exc, junit) from None
    verdicts = {0: "[green]passed[/]", 1: "[bold red]regression[/]",
                2: "[yellow]could not decide[/]"}
    console.print(f"evalkit check: {verdicts[result.exit_code]}")
    raise typer.Exit(result.exit_code)
