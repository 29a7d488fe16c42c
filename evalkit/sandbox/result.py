"""What a program may use (Limits) and what became of it (SandboxResult).

``classify`` turns the runner's raw facts into one status. It is shared by every backend, so a
program gets the same status whichever sandbox ran it.
"""

from __future__ import annotations

import math
import signal
from dataclasses import asdict, dataclass, field

STATUSES = ("passed", "failed", "timeout", "oom", "output_limit", "tampered", "sandbox_error")


@dataclass(frozen=True)
class Limits:
    """Per-program limits. The defaults held against the hostile suite on these machines."""

    timeout_s: float = 10.0  # wall clock
    # all of the program's processes (cgroup); per process, rounded up to seconds (RLIMIT_CPU)
    cpu_s: float = 5.0
    # the program's cgroup (anonymous memory, memfd, tmpfs, page cache), and RLIMIT_AS per process
    memory_mb: int = 1024
    processes: int = 8  # processes and threads (pids cgroup; RLIMIT_NPROC of its uid)
    file_size_mb: int = 16  # largest file it can write (RLIMIT_FSIZE)
    open_files: int = 64  # RLIMIT_NOFILE
    output_bytes: int = 1 << 20  # stdout + stderr kept; more than this ends the run

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"Limits.{name} must be finite, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SandboxResult:
    status: str  # one of STATUSES
    exit_code: int | None  # negative: killed by that signal; None: never ran (sandbox_error)
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float
    detail: str  # one line, for people
    # ``tampered``: what the program tried (reaching the runner, tracers, gc, ctypes, ...)
    evidence: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


def sandbox_error(detail: str, wall_s: float = 0.0) -> SandboxResult:
    return SandboxResult("sandbox_error", None, "", "", wall_s, 0.0, _one_line(detail))


def classify(raw: dict, limits: Limits) -> SandboxResult:
    """Status from the runner's reply (see ``sandbox/runner.py``)."""
    if "error" in raw:
        return sandbox_error(raw["error"])
    channel = raw["status"]
    if raw["leftover_pids"]:
        return sandbox_error(f"processes survived the cleanup: {raw['leftover_pids'][:10]}")
    if channel.startswith("setup_"):  # setup_error: ..., setup_timeout
        return sandbox_error(channel)
    if channel == "not_started":
        return sandbox_error(f"program never started (exit code {raw['exit_code']})")
    evidence = raw.get("evidence") or []
    if evidence:  # whatever else happened: it counts as failed, and people must see why
        status, detail = "tampered", f"tried to reach outside the program: {evidence[0]}"
    else:
        status, detail = _status(raw, channel, limits)
    return SandboxResult(status, raw["exit_code"], raw["stdout"], raw["stderr"], raw["wall_s"],
                         raw["cpu_s"], _one_line(detail), [_one_line(e) for e in evidence])


def _status(raw: dict, channel: str, limits: Limits) -> tuple[str, str]:
    code = raw["exit_code"]
    sig = -code if code < 0 else None
    name = signal.Signals(sig).name if sig and sig in signal.valid_signals() else f"signal {sig}"
    cpu_limit = math.ceil(limits.cpu_s)
    if raw["output_exceeded"]:
        return "output_limit", f"output over the {limits.output_bytes}-byte limit"
    if raw["timed_out"]:
        return "timeout", f"wall time limit of {limits.timeout_s:g} s exceeded"
    if raw.get("cpu_exceeded"):
        return "timeout", (f"CPU time limit of {limits.cpu_s:g} s exceeded (all of the program's "
                           f"processes: {raw['cpu_s']:.2f} s)")
    if raw.get("oom_killed"):
        return "oom", (f"killed at the memory limit ({limits.memory_mb} MB, counting memfd, "
                       f"tmpfs and page cache)")
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and raw["cpu_s"] >= cpu_limit - 0.05):
        return "timeout", f"killed by {name} (CPU time limit {cpu_limit} s)"
    if channel == "memory_error":
        return "oom", f"MemoryError (memory limit {limits.memory_mb} MB)"
    near_limit = raw["maxrss_kb"] >= 0.9 * limits.memory_mb * 1024
    if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGKILL) and near_limit:
        return "oom", f"killed by {name} at the memory limit ({limits.memory_mb} MB)"
    if channel == "completed" and code == 0:
        return "passed", "ran to the end"
    if code == 0:
        how = "SystemExit" if channel == "system_exit" else "os._exit or a signal handler"
        return "failed", f"early exit before the end of the program ({how}, exit code 0)"
    if sig:
        return "failed", f"killed by {name}"
    return "failed", f"exit code {code}: {_last_line(raw['stderr']) or 'no error output'}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
