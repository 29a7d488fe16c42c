"""The `evalkit` command. Thin: parse arguments, call library functions, print.

Each command group lives in its own module and registers on the shared ``app``. Heavy imports
(torch, vllm, transformers) happen inside command bodies so ``evalkit --help`` stays fast.
"""

from __future__ import annotations

import sys

from evalkit.cli import analyze, compare, finetune, run, sandbox  # noqa: F401  (register)
from evalkit.cli.app import app


def main() -> None:
    from evalkit.errors import EvalkitError

    try:
        app()
    except EvalkitError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted: finished items are saved; rerun the same command to resume",
              file=sys.stderr)
        sys.exit(130)
