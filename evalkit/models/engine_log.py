"""An engine's own output goes to a log file in the run folder, not the terminal.

vLLM, transformers and torch write INFO/WARNING lines, progress bars and, when a child dies,
tracebacks. vLLM's engine core runs in child processes that inherit file descriptors 1 and 2,
so configuring Python's logging is not enough: while an engine lives, fds 1 and 2 point at
``<out>/engine.log`` (what the engine's processes write, wherever they write it, lands there)
and evalkit's own console writes to a copy of the real stderr. The fds are restored when the
engine stops, before any error is printed, so errors still reach stderr in full.

The CLI chooses the folder (`--out` / `--runs-dir`); ``--verbose`` (or a library caller that
never calls ``log_into``) keeps the raw output on the terminal.

    with log_into(out):                # the CLI, around what starts engines
        log = EngineLog.open("vllm engine for x")
        with log.starting("vllm"):     # a spinner with the engine's stage
            llm = LLM(...)
        ...
        log.close()                    # fds back; one summary line of the warnings
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from evalkit.progress import console

_folder: Path | None = None
_announced: set[Path] = set()
_open: list[EngineLog] = []  # redirected now, outermost first
# What the engine is doing, read off its log while it starts (first match wins, latest line).
_STAGES = (
    (re.compile(r"compil", re.I), "compiling"),
    (re.compile(r"cuda ?graph|warm", re.I), "warming up"),
    (re.compile(r"kv cache|num_gpu_blocks|num_cpu_blocks|memory profil", re.I),
     "sizing the KV cache"),
    (re.compile(r"load(ing)? (weights|model|safetensors)|checkpoint shards|model weights", re.I),
     "loading weights"),
    (re.compile(r"lora", re.I), "loading adapters"),
    (re.compile(r"tokeniz", re.I), "loading the tokenizer"),
    (re.compile(r"init|engine|config|worker", re.I), "starting processes"),
)
_WARNING = re.compile(r"\bWARN(ING)?\b|Warning:")
# Warnings that say nothing about the results: evalkit's own choices (eager mode and the engine
# in evalkit's process on CPU, which also makes a second engine re-register vLLM's kernels) and
# the platform's chatter (Triton, deprecations inside the libraries).
_NOISE = re.compile(r"enforce eager|compilation was disabled|V1_MULTIPROCESSING|set_num_threads|"
                    r"already registered|VLLM_DIST_IDENT|triton|deprecat|FutureWarning|"
                    r"Model Runner V2|NUMA|LD_PRELOAD|tcmalloc", re.I)
_PREFIX = re.compile(r"^.*?(WARN(ING)?|Warning:)\s*((\S+\s+){0,2}\[[^]]*\]\s*)?")


@contextlib.contextmanager
def log_into(folder: Path | None) -> Iterator[None]:
    """Engines started inside write to ``folder / "engine.log"`` (None: to the terminal)."""
    global _folder
    saved, _folder = _folder, folder
    try:
        yield
    finally:
        _folder = saved


class EngineLog:
    """Fds 1 and 2 redirected into the log file while an engine lives."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._saved: tuple[int, int] | None = None
        self._start = 0  # where this engine's part of the log begins
        self._console_file: object = None  # our copy of the real stderr, while redirected

    @classmethod
    def open(cls, what: str) -> EngineLog:
        """Start logging; a no-op when ``log_into`` chose the terminal."""
        log = cls(_folder / "engine.log" if _folder is not None else None)
        if log.path is not None:
            log._redirect(what)
        return log

    def _redirect(self, what: str) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {what} ===\n")
            self._start = f.tell()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        _open.append(self)
        if _writes_fd2(console.file):  # the console follows the real stderr, not fd 2
            self._console_file = console.file = os.fdopen(os.dup(self._saved[1]), "w",
                                                          buffering=1)
        if self.path not in _announced:
            _announced.add(self.path)
            console.print(f"engine log: {self.path} (--verbose shows it here)", style="dim",
                          markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def starting(self, name: str) -> Iterator[None]:
        """A spinner with the engine's stage (read off the log) while it starts."""
        if self._saved is None:
            yield
            return
        label = f"starting {name} engine"
        stop = threading.Event()
        with console.status(f"{label} · starting processes") as status:
            def follow() -> None:
                while not stop.wait(0.5):
                    stage = self._stage()
                    if stage:
                        status.update(f"{label} · {stage}")

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join()

    def _stage(self) -> str | None:
        for line in reversed(self._tail().splitlines()[-20:]):
            message = line.split("] ", 1)[-1]  # not the "(EngineCore pid=...) INFO [file]" part
            for pattern, stage in _STAGES:
                if pattern.search(message):
                    return stage
        return None

    def _tail(self) -> str:
        assert self.path is not None
        try:
            with self.path.open("rb") as f:
                f.seek(self._start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Fds back to the terminal; the warnings of this engine's part of the log in one line."""
        if self._saved is None:
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        out, err = self._saved
        self._saved = None
        if self in _open:
            _open.remove(self)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        if self._console_file is not None and console.file is self._console_file:
            console.file = None  # type: ignore[assignment]  # back to following sys.stderr
            with contextlib.suppress(OSError):
                self._console_file.close()  # type: ignore[attr-defined]
        self._console_file = None
        summary = warnings_line(self._tail(), self.path)
        if summary:
            console.print(summary, style="yellow", markup=False, highlight=False,
                          soft_wrap=True)

    @contextlib.contextmanager
    def closed_on_error(self) -> Iterator[None]:
        """A start that fails or is interrupted closes the log (its traceback kept there)."""
        try:
            yield
        except BaseException as exc:
            from evalkit.errors import EvalkitError

            if not isinstance(exc, EvalkitError):  # (those are one clear line already)
                self.record(exc)
            self.close()
            raise

    def record(self, exc: BaseException) -> None:
        """A failed start's traceback goes to the log (the terminal gets one line)."""
        if self.path is None or not isinstance(exc, Exception):
            return
        import traceback

        with self.path.open("a") as f:
            traceback.print_exception(exc, file=f)

    def failure_hint(self) -> str:
        return f" (engine log: {self.path})" if self.path is not None else ""


def terminal_stderr() -> int:
    """The fd of the real stderr, also while an engine's log holds fd 2 (a last-resort exit
    line must reach the terminal)."""
    saved = _open[0]._saved if _open else None
    return saved[1] if saved else 2


def warnings_line(text: str, path: Path | None) -> str | None:
    """``engine: 3 warnings (first: ...); see PATH`` or None when there were none."""
    found = [line for line in text.splitlines()
             if _WARNING.search(line) and not _NOISE.search(line)]
    if not found:
        return None
    first = " ".join(_PREFIX.sub("", found[0]).split())[:100]
    count = f"{len(found)} warning{'s' if len(found) > 1 else ''}"
    return f"engine: {count} (first: {first}); see {path}"


def _writes_fd2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False  # a captured stream (tests): leave it be
