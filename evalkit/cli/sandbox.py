"""`evalkit sandbox run` and `evalkit sandbox selftest`: check the code sandbox by hand or in CI.

The work lives in ``evalkit.sandbox``; this module parses, calls, prints.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from evalkit.cli.app import app
from evalkit.errors import EvalkitError

sandbox_app = typer.Typer(help="Run programs in the code sandbox and prove it holds.",
                          no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")

# Control characters (C0, DEL, C1) and the bidirectional overrides, except newline and tab: a
# program's output must not clear the screen, retitle the window, set the clipboard (OSC 52)
# or reorder what people read.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``), never sent."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


_BACKEND = typer.Option(help="process (bubblewrap, default) | docker | none (NO isolation).")


@sandbox_app.command("run")
def run_file(
    file: Annotated[Path, typer.Argument(help="Python file to run (stdlib only, no stdin).")],
    backend: Annotated[str, _BACKEND] = "process",
    timeout: Annotated[float, typer.Option(help="Wall-clock limit in seconds.")] = 10.0,
    cpu: Annotated[float | None, typer.Option(help="CPU-time limit in seconds (default: "
                                                   "half the wall limit, at least 1).")] = None,
    memory: Annotated[int, typer.Option(help="Memory (address space) limit in MB.")] = 1024,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON "
                                                         "object.")] = False,
    allow_weaker_isolation: Annotated[bool, typer.Option(
        help="Run even where no cgroup can be made (warned).")] = False,
) -> None:
    """Run one Python file in the sandbox and print its result (status, output, times).
    Exits 0 when the program passed (ran to its end), 1 when it did not."""
    from evalkit.sandbox import Limits, get_sandbox

    try:
        source = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EvalkitError(f"no such file: {file}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"cannot read {file} as UTF-8 text: {exc}") from exc
    try:
        limits = Limits(timeout_s=timeout, cpu_s=cpu if cpu is not None else max(1.0, timeout / 2),
                        memory_mb=memory)
    except ValueError as exc:
        raise EvalkitError(str(exc)) from exc
    with get_sandbox(backend, workers=1, allow_weaker_isolation=allow_weaker_isolation
                     ) as sandbox:
        result = sandbox.run(source, limits)
    if as_json:
        print(json.dumps({"backend": backend, **result.to_dict()}))
        raise typer.Exit(0 if result.passed else 1)
    from rich.console import Console
    from rich.markup import escape

    # The program's words (detail, evidence, output) are hostile: never markup, never control.
    console = Console()
    color = "green" if result.passed else "red"
    console.print(f"[{color}]{result.status}[/{color}] exit code {result.exit_code} · "
                  f"{result.wall_s:.3f} s wall · {result.cpu_s:.3f} s CPU · "
                  f"{escape(terminal_safe(result.detail))}")
    for line in result.evidence:
        console.print(f"[red]evidence:[/red] {escape(terminal_safe(line))}")
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        if text:
            console.rule(name)
            console.out(terminal_safe(text.rstrip("\n")), highlight=False)
    raise typer.Exit(0 if result.passed else 1)


@sandbox_app.command()
def selftest(
    backend: Annotated[str, _BACKEND] = "process",
) -> None:
    """Self-test the sandbox, then run the hostile programs next to canaries on the host."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from evalkit.sandbox import get_sandbox
    from evalkit.sandbox.selftest import run_hostile_suite

    if backend == "none":
        raise EvalkitError("the none backend isolates nothing: there is nothing to self-test")
    console = Console()
    with get_sandbox(backend, workers=1, allow_weaker_isolation=True) as sandbox:
        console.print(f"[green]self-test passed[/green] ({backend} backend)")
        if sandbox.weaker_isolation:
            console.print(f"[red]no cgroup:[/red] {escape(sandbox.weaker_isolation)}: memory in "
                          "memfd/tmpfs and children's CPU time are not limited here; "
                          "evaluations refuse to run without --allow-weaker-isolation")
        elif sandbox.backend == "process":
            console.print("cgroups: a memory, pids and CPU cgroup per worker")
        outcomes = run_hostile_suite(sandbox)
    table = Table(title=f"hostile programs, {backend} backend")
    for column in ("program", "category", "expected", "got", "time", "detail"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        mark = "green" if outcome.ok else "red"
        detail = "; ".join(outcome.problems) or outcome.result.detail
        table.add_row(outcome.program.name, outcome.program.category, outcome.program.expect,
                      f"[{mark}]{outcome.result.status}[/{mark}]",
                      f"{outcome.result.wall_s:.2f}s", detail)
    console.print(table)
    bad = [o.program.name for o in outcomes if not o.ok]
    if bad:
        console.print(f"[red]{len(bad)} hostile program(s) not contained: {', '.join(bad)}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]all {len(outcomes)} hostile programs contained[/green]")
