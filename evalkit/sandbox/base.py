"""What every backend shares: worker slots, retry of sandbox errors, parallel runs, uid blocks.

A backend provides workers (one warm sandbox each: a bwrap'd runner or a container). A worker
runs one program at a time; ``Sandbox`` hands programs to idle workers from a thread pool, so
``run_many`` keeps every worker busy and returns results in input order.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import select
import struct
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Protocol

from evalkit.errors import EvalkitError
from evalkit.paths import resource_dir
from evalkit.sandbox.comparisons import constant_comparisons
from evalkit.sandbox.result import Limits, SandboxResult, sandbox_error

log = logging.getLogger("evalkit.sandbox")

# How long a runner may take beyond the program's own wall limit: the child's setup (up to the
# runner's SETUP_TIMEOUT_S, 60 s, when the previous program left a mess), cleanup, our I/O.
GRACE_S = 75.0
UID_BASE = 60000
UID_BLOCK = 256


# bwrap --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread* that started it ends, so
# every runner is started from this one thread, which lives as long as the process.
_LAUNCHER = ThreadPoolExecutor(1, thread_name_prefix="evalkit-sandbox-launcher")


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    return _LAUNCHER.submit(subprocess.Popen, cmd, **kwargs).result()


def runner_path() -> Path:
    path = resource_dir("sandbox") / "runner.py"
    if not path.is_file():
        raise EvalkitError(f"the sandbox runner is missing at {path}: reinstall evalkit")
    return path


class Worker(Protocol):
    def start(self) -> None: ...
    def run(self, source: str, limits: Limits) -> SandboxResult: ...
    def restart(self) -> None: ...
    def close(self) -> None: ...


class Sandbox:
    """Runs programs in ``workers`` warm sandboxes. Use ``get_sandbox`` to make one."""

    backend = ""
    weaker_isolation: str | None = None  # why this sandbox isolates less than it should

    def __init__(self, workers: list[Worker]):
        self._workers = workers
        self._idle: queue.Queue[Worker] = queue.Queue()
        self._closed = False
        self._start_all()
        for worker in workers:
            self._idle.put(worker)

    @property
    def workers(self) -> int:
        return len(self._workers)

    def _start_all(self) -> None:
        try:
            with ThreadPoolExecutor(len(self._workers)) as pool:
                list(pool.map(lambda w: w.start(), self._workers))
        except BaseException:
            self.close()
            raise

    def run(self, source: str, limits: Limits | None = None) -> SandboxResult:
        """Run one program; a sandbox failure is retried once on a fresh worker."""
        if self._closed:
            raise EvalkitError("this sandbox is closed")
        worker = self._idle.get()
        try:
            result = self._run_on(worker, source, limits or Limits())
        finally:
            self._idle.put(worker)
        found = constant_comparisons(source)
        if found and result.status != "sandbox_error":
            result.status, result.detail = "tampered", found[0]
            result.evidence = [*found, *result.evidence]
        return result

    def run_many(self, programs: Sequence[tuple[str, Limits | None]]) -> list[SandboxResult]:
        """Run (source, limits) pairs on all workers in parallel; results keep input order."""
        if not programs:
            return []
        with ThreadPoolExecutor(min(self.workers, len(programs))) as pool:
            return list(pool.map(lambda job: self.run(*job), programs))

    def _run_on(self, worker: Worker, source: str, limits: Limits) -> SandboxResult:
        """A sandbox error gets one more try on a fresh worker, then is reported as it is."""
        result = worker.run(source, limits)
        if result.status != "sandbox_error":
            return result
        log.warning("sandbox error (%s); retrying on a fresh worker", result.detail)
        try:
            worker.restart()
            result = worker.run(source, limits)
            if result.status == "sandbox_error":
                log.error("sandbox error again: %s", result.detail)
                worker.restart()
        except EvalkitError as exc:
            return sandbox_error(f"worker restart failed: {exc}")
        return result

    def selftest(self) -> None:
        """Raise EvalkitError unless a plain program passes and escapes fail."""
        from evalkit.sandbox.selftest import check_sandbox

        check_sandbox(self)

    def close(self) -> None:
        self._closed = True
        for worker in self._workers:
            try:
                worker.close()
            except Exception as exc:  # closing must reach every worker
                log.warning("closing a sandbox worker failed: %s", exc)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UidBlock:
    """A machine-wide unique block of host uids (one per worker slot), held while open.

    RLIMIT_NPROC counts processes per host uid across the machine, so two sandboxes sharing a
    uid would share (and break) each other's fork limit. A lock file per block keeps them apart,
    across threads and processes alike.
    """

    def __init__(self, size: int):
        if size > UID_BLOCK:
            raise EvalkitError(f"at most {UID_BLOCK} sandbox workers, asked for {size}")
        lock_dir = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
        for index in range(1000):
            handle = open(lock_dir / f"evalkit-sandbox-uids-{index}.lock", "a")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._handle: IO[str] | None = handle
            self.base = UID_BASE + index * UID_BLOCK
            return
        raise EvalkitError("no free sandbox uid block (1000 sandboxes already running?)")

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


# ---------------------------------------------------------------- runner protocol (client side)


def encode_frame(obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


class FrameReader:
    """Reads the runner's length-prefixed JSON frames from a file descriptor, with a deadline."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""

    def read(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            if len(self.buffer) >= 4:
                size = struct.unpack(">I", self.buffer[:4])[0]
                if len(self.buffer) >= 4 + size:
                    body, self.buffer = self.buffer[4 : 4 + size], self.buffer[4 + size :]
                    return json.loads(body)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the sandbox runner did not answer in time")
            if poller.poll(remaining * 1000):
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    raise EOFError("the sandbox runner exited")
                self.buffer += chunk
