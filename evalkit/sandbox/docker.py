"""Docker backend: a warm pool of locked-down containers, one ``docker exec`` per program.

Each worker owns one container: ``--network none --read-only``, tmpfs /tmp and /dev/shm capped in
size and inodes, ``--memory`` (which, being the container's memory cgroup, counts anonymous memory,
memfd, tmpfs and page cache alike), ``--pids-limit``, ``--cpus 1``, no-new-privileges, evalkit's
seccomp profile (``seccomp.docker_profile``: the socket allow-list and the denied calls), pid 1 a
reaper running as nobody. Each program is one exec of the same runner the process backend uses
(``sandbox/runner.py``, passed with ``python3 -c``, so any image with python3 works). It is the one
process with capabilities, and only SETUID, SETGID, SETPCAP and KILL: it drops the program to the
worker's own non-root uid with none left, adds evalkit's seccomp filter and the rlimits, and kills
what the program leaves behind. Why not run it as a non-root user: a program with the runner's uid
can kill it (``kill(-1, SIGKILL)``), which turns its failure into an unscored sandbox error.

Killing a ``docker exec`` client does not stop the process inside. So the runner in the
container enforces the limits itself and kills every process of the program (``kill(-1)`` in the
container's pid namespace, then checks none is left); and after any abnormal end (timeout, oom,
output limit, sandbox error, or a runner that did not answer in time) the worker removes its
container (``docker rm -f`` kills everything in it) and makes a fresh one in the background.

The container's memory limit is the default Limits' memory plus its tmpfs sizes; a program's
own memory limit is RLIMIT_AS inside, as in the process backend.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.paths import cache_dir
from evalkit.sandbox.base import GRACE_S, Sandbox, UidBlock, encode_frame, log, runner_path
from evalkit.sandbox.result import Limits, SandboxResult, classify, sandbox_error
from evalkit.sandbox.seccomp import docker_profile, filter_bpf

DEFAULT_IMAGE = "evalkit-sandbox:bookworm"
ENGINE_HINT = ("start a Docker engine (e.g. `dockerd` as root) or point DOCKER_HOST at one, "
               "or use --backend process")
LABEL = "evalkit.sandbox"
INIT_UID = 65534  # container pid 1 (a reaper) runs as nobody; programs get a uid of their own
RUNNER_CAPS = ("SETUID", "SETGID", "SETPCAP", "KILL")
TMP_MB = 64
SHM_MB = 16
TMP_INODES = 65536  # a flood of empty files costs kernel memory no size= limit counts
SHM_INODES = 1024
PIDS_LIMIT = 64
CPUS = 1.0  # each worker's container gets at most one core: a hog cannot starve a neighbour
PROGRAM_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
               "TMPDIR": "/tmp"}
# pid 1 of each container: becomes nobody (dropping every capability), then only reaps. The
# container itself must start as root: Docker hands capabilities to a root exec (the runner)
# only in a container whose configured user is root.
INIT_SOURCE = f"""
import os, signal
os.setgroups([])
os.setresgid({INIT_UID}, {INIT_UID}, {INIT_UID})
os.setresuid({INIT_UID}, {INIT_UID}, {INIT_UID})
def reap(*_):
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
signal.signal(signal.SIGCHLD, reap)
while True:
    signal.pause()
"""
RECYCLE_STATUSES = ("timeout", "oom", "output_limit", "sandbox_error")


def docker_client() -> Any:
    """A connected client (DOCKER_HOST or the default socket), or EvalkitError."""
    try:
        import docker
    except ImportError as exc:
        raise EvalkitError("the docker backend needs the `docker` package: "
                           "`pip install docker`") from exc
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise EvalkitError(f"no Docker engine is reachable ({reason}): {ENGINE_HINT}") from exc
    return client


def image_exists(client: Any, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_image(client: Any, image: str = DEFAULT_IMAGE, suite: str = "bookworm") -> str:
    """Make ``image`` if the engine lacks it: Debian minbase + python3, no registry involved.

    ``debootstrap --variant=minbase --include=python3 SUITE DIR``, then ``docker import`` of
    that tree. Needs root, the debootstrap package and a Debian mirror the first time (about a
    minute); the tree's tar is cached, so a new engine only needs the import.
    """
    if image_exists(client, image):
        return image
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        raise EvalkitError(
            f"the Docker image {image} is missing and cannot be built here (needs root and "
            f"`apt-get install debootstrap`); or build it from sandbox/Dockerfile: "
            f"`docker build -t {image} sandbox/`")
    repository, _, tag = image.partition(":")
    archive = rootfs_archive(suite)
    client.api.import_image_from_file(str(archive), repository=repository, tag=tag or "latest")
    if not image_exists(client, image):
        raise EvalkitError(f"docker import did not produce {image}")
    return image


def rootfs_archive(suite: str = "bookworm") -> Path:
    """A tar of Debian SUITE minbase + python3, built once and kept in evalkit's cache."""
    archive = cache_dir() / "sandbox" / f"rootfs-{suite}-python3.tar"
    if archive.is_file():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    log.info("building the sandbox root file system with debootstrap (about a minute)")
    with tempfile.TemporaryDirectory(prefix="evalkit-rootfs-", dir=archive.parent) as work:
        rootfs = os.path.join(work, "rootfs")
        _check_call(["debootstrap", "--variant=minbase", "--include=python3", suite, rootfs])
        for bulk in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
                     "var/cache/apt", "var/lib/apt/lists"):
            shutil.rmtree(os.path.join(rootfs, bulk), ignore_errors=True)
        partial = os.path.join(work, "rootfs.tar")
        _check_call(["tar", "-C", rootfs, "-cf", partial, "."])
        os.replace(partial, archive)
    return archive


def _check_call(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise EvalkitError(f"`{' '.join(cmd[:3])} ...` failed ({proc.returncode}): {tail}")


class DockerWorker:
    def __init__(self, client: Any, image: str, uid: int, memory_mb: int, seccomp: bytes,
                 recycler: ThreadPoolExecutor):
        self.client = client
        self.image = image
        self.uid = uid
        self.memory_mb = memory_mb
        self.container: Any = None
        self._next: Future | None = None
        self._recycler = recycler
        self._runner = runner_path().read_text()
        self._config = {"uid": uid, "isolated": True, "pidns": True, "preload": False,
                        "nproc": True, "seccomp": base64.b64encode(seccomp).decode(),
                        "scratch": ["/tmp", "/dev/shm"], "container_cgroup": True}
        self._memory_mb = memory_mb  # what the current container is set to

    def _create(self) -> Any:
        return self.client.containers.run(
            self.image, ["python3", "-I", "-S", "-B", "-c", INIT_SOURCE], detach=True,
            network_mode="none", read_only=True,
            tmpfs={"/tmp": f"size={TMP_MB}m,nr_inodes={TMP_INODES},mode=1777",
                   "/dev/shm": f"size={SHM_MB}m,nr_inodes={SHM_INODES},mode=1777"},
            pids_limit=PIDS_LIMIT, mem_limit=f"{self.memory_mb}m",
            memswap_limit=f"{self.memory_mb}m", nano_cpus=int(CPUS * 1e9),
            cap_drop=["ALL"], cap_add=list(RUNNER_CAPS),
            security_opt=["no-new-privileges", f"seccomp={docker_profile()}"],
            environment=PROGRAM_ENV, working_dir="/tmp",
            ipc_mode="private", hostname="sandbox", labels={LABEL: _owner()})

    def start(self) -> None:
        try:
            self.container = self._create()
        except Exception as exc:
            raise EvalkitError(f"cannot start a sandbox container from {self.image}: "
                               f"{' '.join(str(exc).split())[:300]}") from exc

    def _ready_container(self) -> Any:
        if self._next is not None:
            future, self._next = self._next, None
            self.container = future.result()
        if self.container is None:
            self.start()
        return self.container

    def _take_container(self) -> Any:
        """The current container, or the replacement being made (never lose track of one)."""
        if self._next is not None:
            future, self._next = self._next, None
            try:
                self.container = future.result()
            except Exception:
                self.container = None
        container, self.container = self.container, None
        return container

    def run(self, source: str, limits: Limits) -> SandboxResult:
        try:
            container = self._ready_container()
        except Exception as exc:
            return sandbox_error(f"no container: {exc}")
        request = {"source": source, "limits": limits.to_dict()}
        try:
            self._fit(container, limits)
            reply = self._exec(container, encode_frame(self._config) + encode_frame(request),
                               limits.timeout_s + GRACE_S)
            result = classify(reply, limits)
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            result = sandbox_error(f"docker exec failed: {exc}")
        except Exception as exc:  # the engine's own errors (docker.errors.APIError, ...)
            result = sandbox_error(f"docker engine error: {' '.join(str(exc).split())[:300]}")
        if result.status in RECYCLE_STATUSES:
            self._recycle()
        return result

    def _fit(self, container: Any, limits: Limits) -> None:
        """The container's memory limit follows the program's (one update per change: an
        evaluation uses one set of limits), its tmpfs sizes added. The pids limit stays the
        container's; per program, RLIMIT_NPROC of its own uid counts its processes."""
        wanted = limits.memory_mb + TMP_MB + SHM_MB
        if wanted != self._memory_mb:
            container.update(mem_limit=f"{wanted}m", memswap_limit=f"{wanted}m")
            self._memory_mb = wanted

    def _exec(self, container: Any, payload: bytes, timeout_s: float) -> dict:
        api = self.client.api
        exec_id = api.exec_create(
            container.id, ["python3", "-I", "-S", "-B", "-c", self._runner, "--once"],
            stdin=True, stdout=True, stderr=True, user="0:0",
            environment=PROGRAM_ENV, workdir="/tmp")["Id"]
        sock = api.exec_start(exec_id, socket=True)
        raw: socket.socket = getattr(sock, "_sock", sock)
        try:
            raw.sendall(payload)
            stdout, stderr = _read_demuxed(raw, time.monotonic() + timeout_s)
        finally:
            sock.close()
        frames = []
        while len(stdout) >= 4:
            size = struct.unpack(">I", stdout[:4])[0]
            frames.append(json.loads(stdout[4 : 4 + size]))
            stdout = stdout[4 + size :]
        if len(frames) != 2:  # {"ready": ...}, then the reply
            tail = " | ".join(stderr.decode(errors="replace").strip().splitlines()[-3:])
            raise EOFError(f"the runner gave no answer ({tail or 'no output'})")
        return frames[1]

    def _recycle(self) -> None:
        self._next = self._recycler.submit(self._replace, self._take_container())

    def _replace(self, old: Any) -> Any:
        _remove(old)
        self._memory_mb = self.memory_mb
        return self._create()

    def restart(self) -> None:
        if self._next is None:  # a failed run already asked for a fresh container
            self._recycle()

    def close(self) -> None:
        _remove(self._take_container())


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def remove_stale_containers(client: Any) -> None:
    """Remove sandbox containers left by evalkit processes of this host that are gone."""
    host = socket.gethostname()
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        owner_host, _, pid = container.labels.get(LABEL, "").partition(":")
        if owner_host == host and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove(container)


def _remove(container: Any) -> None:
    if container is None:
        return
    try:
        container.remove(force=True)  # SIGKILL to everything inside, then delete
    except Exception as exc:
        log.warning("could not remove sandbox container %s: %s", container.id[:12], exc)


def _read_demuxed(raw: socket.socket, deadline: float) -> tuple[bytes, bytes]:
    """Docker's multiplexed exec stream: 8-byte headers (stream id, size), until EOF."""
    buffer = b""
    streams = {1: bytearray(), 2: bytearray()}
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the runner in the container did not answer in time")
        raw.settimeout(remaining)
        try:
            chunk = raw.recv(1 << 20)
        except TimeoutError:
            raise TimeoutError("the runner in the container did not answer in time") from None
        if not chunk:
            return bytes(streams[1]), bytes(streams[2])
        buffer += chunk
        while len(buffer) >= 8:
            kind, size = buffer[0], struct.unpack(">I", buffer[4:8])[0]
            if len(buffer) < 8 + size:
                break
            streams.setdefault(kind, bytearray()).extend(buffer[8 : 8 + size])
            buffer = buffer[8 + size :]


class DockerSandbox(Sandbox):
    backend = "docker"

    def __init__(self, workers: int, image: str = DEFAULT_IMAGE, build: bool = True):
        self.client = docker_client()
        remove_stale_containers(self.client)
        if build:
            ensure_image(self.client, image)
        elif not image_exists(self.client, image):
            raise EvalkitError(f"the Docker image {image} is missing: build it with "
                               f"`docker build -t {image} sandbox/`")
        self._uids = UidBlock(workers)
        self.uids = [self._uids.base + i for i in range(workers)]
        self._recycler = ThreadPoolExecutor(workers, thread_name_prefix="evalkit-docker")
        memory = Limits().memory_mb + TMP_MB + SHM_MB
        try:
            super().__init__([DockerWorker(self.client, image, uid, memory, filter_bpf(),
                                           self._recycler) for uid in self.uids])
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        self._recycler.shutdown(wait=True)
        self._uids.release()

    def close(self) -> None:
        super().close()
        self._release()
