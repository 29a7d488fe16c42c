"""The `evalkit` command. Thin: parse arguments, call library functions, print.

Each command group lives in its own module and registers on the shared ``app``. Heavy imports
(torch, vllm, transformers) happen inside command bodies so ``evalkit --help`` stays fast.
"""

from __future__ import annotations

import sys

from evalkit.cli import analyze, compare, finetune, interop, run, sandbox  # noqa: F401  (register)
from evalkit.cli.app import app


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM's default kills this process at once, and the vLLM engine's worker processes
    # live on, holding memory and cores. Raising unwinds the `with` blocks, which close it.
    raise KeyboardInterrupt


def main() -> None:
    import signal

    from evalkit.errors import EvalkitError

    signal.signal(signal.SIGTERM, _terminate)
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
