"""Engine processes die with evalkit, however evalkit dies.

vLLM runs its engine core (and, with tensor parallelism, its workers) in child processes (on CPU,
evalkit runs an engine without tensor parallelism in its own process unless the user asks
otherwise: see models/vllm.py). When evalkit is killed with SIGKILL (a CI cancellation, a timeout,
the OOM killer) nothing in it runs, so those children live on, holding gigabytes and cores.
``EngineGuard`` starts a small watchdog process, in its own session so a terminal's Ctrl-C or a
``killpg`` of evalkit's group does not take it down first. Until told the engine is up, the
watchdog notes evalkit's new descendants every quarter second (those are the engine's: nothing else
starts processes meanwhile). It holds the read end of a pipe whose only write end is evalkit's;
when that pipe closes without a "release" (evalkit is gone, or the engine was closed and anything
it left must go), it terminates every noted process still alive and their children, then kills
whatever is left after a grace period. A process started between two polls is not missed: while the
guard is held, evalkit's environment carries the guard's token, every process started meanwhile
inherits it, and when evalkit is dead the watchdog also ends every process that carries the token
(the process-tree killer of Jenkins works the same way).

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
TOKEN_ENV = "EVALKIT_ENGINE_GUARD"


class EngineGuard:
    """Kills this process's descendants (the engine's processes) if this process dies first."""

    def __init__(self) -> None:
        self._watchdog: subprocess.Popen | None = None
        self._token = ""
        self._outer_token: str | None = None

    def start(self) -> EngineGuard:
        if self._watchdog is None:
            import uuid

            import psutil

            # Processes already running are not the engine's; named here, so that one the
            # engine starts before the watchdog is up is still noted.
            before = [str(p.pid) for p in psutil.Process().children(recursive=True)]
            self._token = uuid.uuid4().hex
            env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}  # not the watchdog
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "evalkit.models.engine_guard", str(os.getpid()),
                 self._token, *before],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
                env={**env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
            self._outer_token = os.environ.get(TOKEN_ENV)
            os.environ[TOKEN_ENV] = self._token  # inherited by every process started from now
        return self

    def started(self) -> None:
        """The engine is up: processes evalkit starts from now on are not the engine's."""
        self._send(_STARTED)

    def release(self, *, kill: bool = False) -> None:
        """Stop the watchdog; with ``kill``, it first ends the engine processes still alive."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        if os.environ.get(TOKEN_ENV) == self._token:  # processes started now are not the engine's
            if self._outer_token is None:
                del os.environ[TOKEN_ENV]
            else:
                os.environ[TOKEN_ENV] = self._outer_token
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


def watch(parent_pid: int, token: str, before: set[int]) -> None:
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
    if not _alive(parent):  # evalkit is dead: whatever carries its token is an orphan of it
        victims.update((p.pid, p) for p in _carrying(token) if p.pid not in victims)
    for proc in victims.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(list(victims.values()), timeout=_GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _carrying(token: str) -> list:
    """The processes whose environment holds ``token`` (started while the guard was held), but
    multiprocessing's resource tracker (see below) and this watchdog."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and proc.environ().get(TOKEN_ENV) == token \
                    and not _is_resource_tracker(proc):
                found.append(proc)
    return found


def _is_resource_tracker(proc) -> bool:
    """multiprocessing's resource tracker unlinks leaked shared memory once every process that
    used it is gone: it must outlive the engine, and it exits by itself."""
    try:
        # its code is "from multiprocessing.resource_tracker import main;main(fd)"; every
        # spawned child's command line also names it, in "-Wignore:resource_tracker:..."
        return any("resource_tracker import main" in part for part in proc.cmdline())
    except Exception:
        return False


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2], {int(pid) for pid in sys.argv[3:]})
