"""How the `evalkit` command ends: one line on stderr and a documented exit code.

- 0 success; 1 only where a command documents it (`check`: a regression; `sandbox run`: the
  program did not pass);
- 2 bad input or an environment problem (`EvalkitError`, any OS error: permissions, a full or
  read-only disk, an output path that is a file);
- 130 / 143 interrupted by SIGINT / SIGTERM: finished items are saved and the same command
  resumes.

A signal raises KeyboardInterrupt in the main thread, so ``with`` blocks close the engine and
the run files. Whatever exception the unwinding then produces (vLLM's engine core got the
terminal's Ctrl-C too and died first: EngineDeadError) is part of the interruption, not an
error. If unwinding hangs, a second signal or a timer ends the process anyway; the engine
watchdog (evalkit.models.engine_guard) then ends the engine's processes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

INTERRUPTED = "interrupted; resume with the same command"
_UNWIND_S = 60.0  # longest a clean shutdown may take after a signal (engine shutdown + files)

_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"
_received: int | None = None


def _on_signal(signum: int, frame: object) -> None:
    global _received
    if _received is not None:  # a second signal: the user wants out now
        _leave(signum)
    _received = signum
    timer = threading.Timer(_UNWIND_S, _leave, args=(signum,))
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def _unraisable(info: sys.UnraisableHookArgs) -> None:
    """The KeyboardInterrupt landed in a finalizer (``__del__``), which swallows it: raise it
    again in the main flow instead of printing "Exception ignored ... Traceback"."""
    global _received
    if _received is not None and isinstance(info.exc_value, KeyboardInterrupt):
        signum, _received = _received, None
        signal.raise_signal(signum)  # the handler runs again at the next bytecode
        return
    sys.__unraisablehook__(info)


def _leave(signum: int) -> None:
    from evalkit.models.engine_log import terminal_stderr

    # the terminal's stderr even while the engine's log holds fd 2 (the unwinding hung)
    os.write(terminal_stderr(), f"{INTERRUPTED}\n".encode())
    os._exit(128 + signum)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_message(exc: BaseException) -> str:
    """One line for an error the user can fix. An OS error names the path and the reason:
    ``[Errno 13] Permission denied: '/x'`` -> ``/x: permission denied``."""
    if not isinstance(exc, OSError) or exc.filename is None:
        return one_line(str(exc) or type(exc).__name__)
    what = exc.strerror or type(exc).__name__
    target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
    return one_line(f"{target}: {what[:1].lower()}{what[1:]}")


def run_command(app: Callable[[], object]) -> None:
    """Run the typer app and end the process the documented way."""
    saved = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
             sys.unraisablehook)  # put back on return: main() may run in-process (tests)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    sys.unraisablehook = _unraisable
    # multiprocessing's resource tracker (started by the engine, with this process's -W
    # options) unlinks the shared memory an interrupted engine could not, then warns that it
    # did: the clean-up stays, the warning goes.
    if _QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_TRACKER)
    try:
        _run(app)
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
        sys.unraisablehook = saved[2]


def _run(app: Callable[[], object]) -> None:
    from evalkit.errors import EvalkitError

    try:
        app()
    except SystemExit as exc:
        if _received is not None:  # typer turns KeyboardInterrupt into Exit(130)
            _end_interrupted()
        raise exc
    except BaseException as exc:
        if _received is not None or isinstance(exc, KeyboardInterrupt):
            _end_interrupted()
        if isinstance(exc, EvalkitError):
            _fail(error_message(exc), exc.exit_code)
        if isinstance(exc, OSError):
            _fail(error_message(exc), 2)
        raise


def _end_interrupted() -> None:
    print(INTERRUPTED, file=sys.stderr, flush=True)
    sys.exit(128 + (_received or signal.SIGINT))


def _fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
