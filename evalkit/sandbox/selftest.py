"""Proof that a sandbox works before anything is scored with it.

``check_sandbox`` is the quick self-test every evaluation runs (a plain program must pass, an
early exit must fail, and in an isolating backend: no network, no root, no capabilities, no
writable system files). The hostile suite (``sandbox/hostile/*.py``, each file names its category
and expected status) is the long one: ``evalkit sandbox selftest`` and the test suite run it next
to canaries on the host (a file, a process, a TCP listener, a secret environment variable) and
check that none of them was touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from evalkit.errors import EvalkitError
from evalkit.paths import project_root, resource_dir
from evalkit.sandbox.result import Limits, SandboxResult


class Sandbox(Protocol):
    """What the self-test needs of a sandbox (``evalkit.sandbox.base.Sandbox`` is one; that
    module calls this one, so this one does not import it)."""

    backend: str
    _workers: list[Any]

    def run(self, source: str, limits: Limits | None = None) -> SandboxResult: ...
    def run_many(self, programs: Any) -> list[SandboxResult]: ...

QUICK_LIMITS = Limits(timeout_s=10, cpu_s=5)
HOSTILE_LIMITS = Limits(timeout_s=3, cpu_s=1)
SECRET_ENV = "EVALKIT_CANARY_SECRET"

_PLAIN = 'print("evalkit-selftest-ok")\n'
_EARLY_EXIT = "import sys\nsys.exit(0)\nassert False\n"
# Raises the runner's finish event itself, then leaves before its (failing) test.
_FORGE = "import os, sys\nsys.audit('evalkit.finish', sys._getframe())\nos._exit(0)\nassert False\n"
_PROBE = """
import os, socket
for address in [("1.1.1.1", 53), ("127.0.0.1", 22), ("8.8.8.8", 443)]:
    try:
        socket.create_connection(address, timeout=2).close()
        print("connected", address)
    except OSError:
        pass
for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, 40):  # 40: AF_VSOCK
    try:
        socket.socket(family, socket.SOCK_DGRAM).close()
        print("connected", "socket family", family)
    except OSError:
        pass
with open("/proc/self/status") as f:
    caps = [int(line.split()[1], 16) for line in f if line.startswith(("CapEff", "CapPrm"))]
writable = [p for p in ("/usr", "/etc", "/") if os.access(p, os.W_OK)]
print("uid", os.getuid(), "caps", sum(caps), "writable", writable)
"""


def check_sandbox(sandbox: Sandbox) -> None:
    """The pre-evaluation self-test. Raises EvalkitError with what failed and how to fix it."""
    isolated = sandbox.backend != "none"
    programs = [_PLAIN, _EARLY_EXIT, _FORGE] + ([_PROBE] if isolated else [])
    results = sandbox.run_many([(source, QUICK_LIMITS) for source in programs])
    fix = _fix_hint(sandbox.backend)
    plain, early, forged = results[0], results[1], results[2]
    if plain.status != "passed" or plain.stdout.strip() != "evalkit-selftest-ok":
        raise EvalkitError(f"sandbox self-test: a plain print() did not pass ({plain.status}: "
                           f"{plain.detail}). {fix}")
    if early.status != "failed":
        raise EvalkitError(f"sandbox self-test: an early sys.exit(0) was {early.status}, "
                           f"not failed. {fix}")
    if forged.status != "tampered":
        raise EvalkitError(f"sandbox self-test: a forged pass signal was {forged.status}, "
                           f"not tampered ({forged.detail}). {fix}")
    if not isolated:
        return
    probe = results[3]
    if probe.status != "passed" or "connected" in probe.stdout:
        raise EvalkitError(f"sandbox self-test: a network connection was not blocked "
                           f"({probe.status}: {probe.stdout.strip()[:200]}). {fix}")
    match = re.search(r"uid (\d+) caps (\d+) writable \[(.*)\]", probe.stdout)
    if not match:
        raise EvalkitError(f"sandbox self-test: the privilege probe did not run "
                           f"({probe.status}: {probe.detail}). {fix}")
    if match.group(1) == "0" or match.group(2) != "0" or match.group(3):
        raise EvalkitError(f"sandbox self-test: programs run with privileges "
                           f"({match.group(0)}). {fix}")


def _fix_hint(backend: str) -> str:
    if backend == "docker":
        return ("Check the Docker engine and image (see sandbox/Dockerfile), "
                "or use --sandbox process.")
    return "Install bubblewrap (`apt-get install bubblewrap`) and rerun, or use --sandbox docker."


# ---------------------------------------------------------------- the hostile suite


@dataclass(frozen=True)
class HostileProgram:
    name: str
    category: str
    expect: str  # the status it must get
    template: str  # source with @CANARY_...@ placeholders
    limits: Limits = HOSTILE_LIMITS

    def source(self, canaries: Canaries) -> str:
        return (self.template.replace("@CANARY_FILE@", str(canaries.file))
                .replace("@CANARY_PID@", str(canaries.process.pid))
                .replace("@CANARY_PORT@", str(canaries.port))
                .replace("@PROJECT_DIR@", str(project_root())))


def hostile_programs() -> list[HostileProgram]:
    folder = resource_dir("sandbox") / "hostile"
    programs = []
    for path in sorted(folder.glob("*.py")):
        text = path.read_text()
        header = dict(re.findall(r"^# (category|expect|limits): (.+)$", text, re.MULTILINE))
        limits = HOSTILE_LIMITS
        if "limits" in header:  # e.g. "# limits: memory_mb=256 timeout_s=10"
            pairs = (item.split("=") for item in header["limits"].split())
            limits = replace(limits, **{key: _number(value) for key, value in pairs})
        programs.append(HostileProgram(path.stem, header["category"], header["expect"], text,
                                       limits))
    if not programs:
        raise EvalkitError(f"no hostile programs found in {folder}")
    return programs


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


class Canaries:
    """Things on the host a program must not reach: a file, a process, a port, a secret.

    Use as a context manager; ``problems()`` lists whatever was touched.
    """

    def __init__(self) -> None:
        self.secret = "canary-" + secrets.token_hex(16)
        self._dir = tempfile.TemporaryDirectory(prefix="evalkit-canary-")
        self.file = Path(self._dir.name) / "secret.txt"
        self.file.write_text(self.secret + "\n")
        self.file_digest = _digest(self.file)
        self.project_digest = _digest(project_root() / "pyproject.toml")
        self.process = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, start_new_session=True)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()
        self._old_env = os.environ.get(SECRET_ENV)
        os.environ[SECRET_ENV] = self.secret

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def problems(self, result: SandboxResult | None = None) -> list[str]:
        found = []
        if not self.file.exists() or _digest(self.file) != self.file_digest:
            found.append(f"canary file {self.file} changed or deleted")
        if _digest(project_root() / "pyproject.toml") != self.project_digest:
            found.append("the project's pyproject.toml changed")
        for folder in (project_root(), Path("/etc"), Path("/usr"), Path("/root"), Path("/")):
            if os.path.lexists(folder / "evalkit-pwned"):
                found.append(f"{folder / 'evalkit-pwned'} was created")
        if self.process.poll() is not None:
            found.append(f"canary process {self.process.pid} was killed")
        if self.connections:
            found.append(f"{self.connections} connection(s) reached the canary port {self.port}")
        if result is not None:
            output = result.stdout + result.stderr
            if self.secret in output:
                found.append("the canary secret appeared in the program's output")
            if "ESCAPED" in result.stdout:
                line = next(li for li in result.stdout.splitlines() if "ESCAPED" in li)
                found.append(f"the program reports an escape: {line[:200]}")
        return found

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self._listener.close()
        self._dir.cleanup()
        if self._old_env is None:
            os.environ.pop(SECRET_ENV, None)
        else:
            os.environ[SECRET_ENV] = self._old_env

    def __enter__(self) -> Canaries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def leftover_processes(sandbox: Sandbox) -> list[str]:
    """Processes of the sandbox's programs still alive, seen from outside the sandbox.

    The one process each process-backend runner keeps forked ahead for its next program (see
    ``spawn_child`` in sandbox/runner.py) is not a leftover: it is the runner's own child, made
    after the runner had checked that nothing of the last program was left.
    """
    found = []
    if sandbox.backend == "process" and getattr(sandbox, "uids", None):
        runners = {w.runner_pid() for w in sandbox._workers} - {None}
        waiting: set[int] = set()
        for pid, uids, ppid, name in _host_processes():
            if not set(sandbox.uids) & uids:
                continue
            if ppid in runners and ppid not in waiting:
                waiting.add(ppid)
                continue
            found.append(f"pid {pid} ({name}, parent {ppid})")
    elif sandbox.backend == "docker":
        for worker in sandbox._workers:
            container = getattr(worker, "container", None)
            if container is None:
                continue
            container.reload()
            init = str(container.attrs["State"]["Pid"])  # host pid of the container's reaper
            rows = container.top(ps_args="-eo pid,user,comm").get("Processes") or []
            found += [" ".join(row) for row in rows if row[0] != init]
    return found


def _host_processes() -> list[tuple[int, set[int], int, str]]:
    """(pid, uids, parent pid, name) of every process on this host."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            lines = Path(f"/proc/{name}/status").read_text().splitlines()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        uids = {int(value) for value in fields.get("Uid", "").split()}
        found.append((int(name), uids, int(fields.get("PPid", "0")), fields["Name"].strip()))
    return found


@dataclass
class HostileOutcome:
    program: HostileProgram
    result: SandboxResult
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result.status == self.program.expect and not self.problems


def run_hostile(sandbox: Sandbox, program: HostileProgram, canaries: Canaries) -> HostileOutcome:
    result = sandbox.run(program.source(canaries), program.limits)
    problems = canaries.problems(result)
    problems += [f"left behind: {p}" for p in leftover_processes(sandbox)]
    after = sandbox.run(_PLAIN, QUICK_LIMITS)
    if after.status != "passed":
        problems.append(f"the sandbox broke: the next plain program got {after.status} "
                        f"({after.detail})")
    return HostileOutcome(program, result, problems)


def run_hostile_suite(sandbox: Sandbox) -> list[HostileOutcome]:
    with Canaries() as canaries:
        return [run_hostile(sandbox, program, canaries) for program in hostile_programs()]
