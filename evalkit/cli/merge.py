"""`evalkit merge`: join the shard folders of `run --shard i/N` into run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evalkit.cli.app import app


@app.command()
def merge(
    folders: Annotated[list[Path], typer.Argument(
        help="Shard run folders, or folders that contain them (e.g. each array job's --out)")],
    out: Annotated[Path, typer.Option(help="Root folder for the merged run folders (as run's "
                                           "--out)")] = Path("runs"),
    data_dir: Annotated[Path | None, typer.Option(
        help="Benchmark data [default: the folder the shards used]")] = None,
) -> None:
    """Check that the shards of each run are complete, of one configuration and disjoint, and
    write the run folder an unsharded run would have written."""
    from evalkit.cli.run import print_run_summary
    from evalkit.scale.merge import merge_shards

    for folder in merge_shards(folders, out, data_dir):
        print_run_summary(folder)
