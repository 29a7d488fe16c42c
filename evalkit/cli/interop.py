"""`evalkit import lm-eval` and `evalkit export --format lm-eval` (logic in
evalkit.run.lm_eval_format; this module only parses, calls and prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evalkit.cli.app import app

import_app = typer.Typer(help="Turn another harness's outputs into evalkit run folders.",
                         no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("lm-eval")
def import_lm_eval(
    output_dir: Annotated[Path, typer.Argument(
        help="lm-eval 0.4 output folder (results_*.json + samples_*.jsonl from --log_samples)")],
    out: Annotated[Path, typer.Option(help="Root folder for the run folders")] = Path("runs"),
) -> None:
    """Import lm-eval runs, so compare, check and report work on them."""
    from evalkit.run.lm_eval_format import import_output_dir

    for folder in import_output_dir(output_dir, out):
        print(folder)


@app.command("export")
def export(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to export")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the files")],
    fmt: Annotated[str, typer.Option("--format", help="lm-eval")] = "lm-eval",
) -> None:
    """Write run folders in lm-eval 0.4's format (results_DATE.json, samples_TASK_DATE.jsonl)."""
    from evalkit.errors import EvalkitError
    from evalkit.run.lm_eval_format import export_runs

    if fmt != "lm-eval":
        raise EvalkitError(f"--format {fmt!r} is not supported (choose lm-eval)")
    for path in export_runs(runs, output):
        print(path)
