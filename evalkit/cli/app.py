"""The typer application object every command module registers on."""

import typer

app = typer.Typer(
    name="evalkit",
    help="What did this fine-tune change? Evaluate, compare and look inside checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
