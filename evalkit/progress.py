"""evalkit's stderr console and its one progress-bar builder (stdout stays for results)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def progress_bar(*fields: ProgressColumn, remaining: bool = False, enabled: bool = True,
                 transient: bool = False, out: Console | None = None) -> Progress:
    """``description  ━━━━  done/total  [fields...]  elapsed  [remaining]`` on stderr."""
    columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), *fields, TimeElapsedColumn()]
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=out or console, transient=transient,
                    disable=not enabled or not sys.stderr)
