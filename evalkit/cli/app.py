"""The typer application object every command module registers on."""

from typing import Annotated

import typer

app = typer.Typer(
    name="evalkit",
    help="What did this fine-tune change? Evaluate, compare and look inside checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        from evalkit import __version__

        print(f"evalkit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print evalkit's version and exit.")] = False,
) -> None:
    pass
