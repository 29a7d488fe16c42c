"""Engine processes die with evalkit, however evalkit dies.

vLLM runs its engine core (and, with tensor parallelism, its workers) in child processes. When
evalkit is killed with SIGKILL (a CI cancellation, a timeout, the OOM killer) nothing in it runs,
so those children live on, holding gigabytes and cores. ``EngineGuard`` starts a small watchdog
process, in its own session so a terminal's Ctrl-C or a ``killpg`` of evalkit's group does not
take it down first. Until told the engine is up, the watchdog notes evalkit's new descendants
every quarter second (those are the engine's: nothing else starts processes meanwhile). It holds
the read end of a pipe whose only write end is evalkit's; when that pipe closes without a
"release" (evalkit is gone, or the engine was closed and anything it left must go), it
terminates every noted process still alive and their children, then kills whatever is left
after a grace period.

    guard = EngineGuard().start()
    llm = LLM(...)              # the engine start is covered too
    guard.started()
    ...
    guard.release(kill=True)    # after the engine's own shutdown: end what it left behind

Run as ``python -m evalkit.models.engine_guard PID`` it is the watchdog itself.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys

_POLL_S = 0.25
_GRACE_S = 3.0
_RELEASE = b"release\n"
_STARTED = b"started\n"


class EngineGuard:
    """Kills this process's descendants (the engine's processes) if this process dies first."""

    def __init__(self) -> None:
        self._watchdog: subprocess.Popen | None = None

    def start(self) -> EngineGuard:
        if self._watchdog is None:
            import psutil

            # Processes already running are not the engine's; named here, so that one the
            # engine starts before the watchdog is up is still noted.
            before = [str(p.pid) for p in psutil.Process().children(recursive=True)]
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "evalkit.models.engine_guard", str(os.getpid()), *before],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
        return self

    def started(self) -> None:
        """The engine is up: processes evalkit starts from now on are not the engine's."""
        self._send(_STARTED)

    def release(self, *, kill: bool = False) -> None:
        """Stop the watchdog; with ``kill``, it first ends the engine processes still alive."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        try:
            if not kill:
                watchdog.stdin.write(_RELEASE)
            watchdog.stdin.close()
            watchdog.wait(timeout=_GRACE_S + 10)
        except (OSError, subprocess.TimeoutExpired):
            watchdog.kill()
            watchdog.wait()

    def _send(self, message: bytes) -> None:
        if self._watchdog is not None:
            self._watchdog.stdin.write(message)
            self._watchdog.stdin.flush()


def watch(parent_pid: int, before: set[int]) -> None:
    """The watchdog: note ``parent_pid``'s new descendants until stdin closes, then clean up."""
    import psutil

    try:
        parent = psutil.Process(parent_pid)
    except psutil.NoSuchProcess:
        return
    noted: dict[int, psutil.Process] = {}
    received = b""
    while True:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], _POLL_S)
        if ready:
            chunk = os.read(sys.stdin.fileno(), 64)
            received += chunk
            if not chunk:
                break
        if _STARTED in received:
            continue  # the engine is up; its later processes are its children's children
        try:
            for child in parent.children(recursive=True):
                mine = child.pid not in before and child.pid != os.getpid()
                if mine and not _is_resource_tracker(child):
                    noted.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            break
    if received.endswith(_RELEASE):
        return
    # evalkit is gone; its orphans were re-parented, but their own children are still theirs.
    victims: dict[int, psutil.Process] = {}
    for proc in noted.values():
        if not proc.is_running():  # is_running also checks the pid was not reused
            continue
        victims[proc.pid] = proc
        with contextlib.suppress(psutil.NoSuchProcess):
            victims.update((c.pid, c) for c in proc.children(recursive=True))
    for proc in victims.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(list(victims.values()), timeout=_GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def _is_resource_tracker(proc) -> bool:
    """multiprocessing's resource tracker unlinks leaked shared memory once every process that
    used it is gone: it must outlive the engine, and it exits by itself."""
    try:
        return any("resource_tracker" in part for part in proc.cmdline())
    except Exception:
        return False


if __name__ == "__main__":
    watch(int(sys.argv[1]), {int(pid) for pid in sys.argv[2:]})
