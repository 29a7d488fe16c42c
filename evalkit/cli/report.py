"""`evalkit publish` and `evalkit report` (logic in evalkit.report; this module parses, calls and
prints). Light imports only: neither command loads torch or vllm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evalkit.cli.app import app


def publish_paths(paths: list[Path], store: Path) -> list[tuple[Path, bool]]:
    """Publish every record the paths hold into ``store``; also what `run`/`compare --publish`
    call. All records are built (and so validated) before the first one is written."""
    from evalkit.report.collect import publishable
    from evalkit.report.store import write_record

    records = [rec for p in paths for rec in publishable(p)]
    return [write_record(store, rec) for rec in records]


def print_published(results: list[tuple[Path, bool]]) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    for path, written in results:
        console.print(f"{'published' if written else 'unchanged'}  {path}")


@app.command()
def publish(
    paths: Annotated[list[Path], typer.Argument(help="Run folders, folders of runs or compare "
                                                     "folders.")],
    to: Annotated[Path, typer.Option("--to", help="The results store.")] = Path("results"),
) -> None:
    """Write one versioned result record per checkpoint × task × generation config (and one per
    comparison) into the results store. Publishing the same run again changes nothing; a
    different result for the same key is refused."""
    print_published(publish_paths(paths, to))


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(
        help="Any mix of results stores, run folders, compare, analyze and finetune folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for index.html and report.md"
                                      )] = Path("report"),
    max_flips: Annotated[int, typer.Option(
        help="Flipped items embedded per task of a comparison (the rest are counted).")] = 200,
    quiet: Annotated[bool, typer.Option("--quiet", help="Do not print the Markdown summary.")
                     ] = False,
) -> None:
    """Write a self-contained report: index.html (works offline, from file://) and report.md
    (fits a PR comment)."""
    from evalkit.errors import EvalkitError
    from evalkit.report import make_report

    if max_flips < 0:
        raise EvalkitError("--max-flips must be 0 or more")
    html_path, md_path = make_report(paths, out, max_flips=max_flips)
    if not quiet:
        print(md_path.read_text(encoding="utf-8"))
    print(f"report: {html_path}\nsummary: {md_path}")
