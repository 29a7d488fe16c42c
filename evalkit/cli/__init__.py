"""The `evalkit` command. Thin: parse arguments, call library functions, print.

Each command group lives in its own module and registers on the shared ``app``. Heavy imports
(torch, vllm, transformers) happen inside command bodies so ``evalkit --help`` stays fast.
How the command ends (signals, errors, exit codes) is evalkit.cli.exits.
"""

from __future__ import annotations

from evalkit.cli import (  # noqa: F401  (register)
    analyze,
    compare,
    finetune,
    interop,
    merge,
    report,
    run,
    sandbox,
)
from evalkit.cli.app import app


def main() -> None:
    from evalkit.cli.exits import run_command

    run_command(app)
