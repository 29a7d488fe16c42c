"""Fixtures for the sandbox tests: real sandboxes, real canaries, a real Docker engine.

The Docker engine: the one DOCKER_HOST (or the default socket) points to; otherwise, as root
with `dockerd` installed (Debian's docker.io), one started for the session and stopped at its
end: overlay2 storage when it works on this kernel, else vfs (slower container creation). The
image is made without any registry (debootstrap + docker import, cached). The docker tests are
skipped only when no engine can be had, and the skip says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.sandbox import Sandbox, get_sandbox
from evalkit.sandbox.selftest import Canaries

DOCKERD_FLAGS = ["--iptables=false", "--bridge=none"]
DOCKERD_START_S = 60


# ---------------------------------------------------------------- process backend


@pytest.fixture(scope="module")
def process_sandbox() -> Iterator[Sandbox]:
    """Two warm workers, as an evaluation on a 2-core machine would use."""
    with get_sandbox("process", workers=2) as sandbox:
        yield sandbox


@pytest.fixture
def canaries() -> Iterator[Canaries]:
    with Canaries() as found:
        yield found


# ---------------------------------------------------------------- docker engine


def _ping(host: str | None) -> str | None:
    """None if an engine answers at ``host`` (None: the environment's default), else why not."""
    import docker

    try:
        client = docker.DockerClient(base_url=host) if host else docker.from_env()
        client.ping()
        client.close()
    except Exception as exc:
        return " ".join(str(exc).split())[:200]
    return None


def _start_dockerd(driver: str, work: Path) -> subprocess.Popen:
    socket_path = work / "docker.sock"
    log = open(work / f"dockerd-{driver}.log", "w")  # noqa: SIM115  (closed with the daemon)
    proc = subprocess.Popen(
        ["dockerd", f"--storage-driver={driver}", *DOCKERD_FLAGS,
         f"--host=unix://{socket_path}", f"--pidfile={work / 'docker.pid'}",
         f"--exec-root={work / 'exec'}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + DOCKERD_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if socket_path.exists() and _ping(f"unix://{socket_path}") is None:
            return proc
        time.sleep(0.5)
    _stop_dockerd(proc)
    tail = (work / f"dockerd-{driver}.log").read_text()[-500:]
    raise RuntimeError(f"dockerd --storage-driver={driver} did not come up: {tail}")


def _stop_dockerd(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # dockerd stops its containers and its containerd
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    proc.log.close()  # type: ignore[attr-defined]


def _containers_start(host: str) -> bool:
    """Whether this engine can really run the sandbox image (overlay2 may mount but not run)."""
    import docker

    from evalkit.sandbox.docker import DEFAULT_IMAGE, ensure_image

    client = docker.DockerClient(base_url=host)
    try:
        ensure_image(client, DEFAULT_IMAGE)
        client.containers.run(DEFAULT_IMAGE, ["python3", "-c", "pass"], remove=True,
                              network_mode="none")
        return True
    except docker.errors.DockerException:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[str]:
    """DOCKER_HOST of a working engine with the sandbox image; started here if need be."""
    why = _ping(None)
    if why is None:
        yield os.environ.get("DOCKER_HOST", "default")
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip(f"docker backend not tested: no Docker engine reachable ({why}) and none "
                    f"can be started here (needs root and dockerd: apt-get install docker.io)")
    work = Path(tempfile.mkdtemp(prefix="evalkit-dockerd-"))
    proc = None
    try:
        for driver in ("overlay2", "vfs"):
            proc = _start_dockerd(driver, work)
            host = f"unix://{work / 'docker.sock'}"
            if _containers_start(host):
                break
            _stop_dockerd(proc)
            proc = None
        if proc is None:
            pytest.skip("docker backend not tested: dockerd started but could not run the "
                        "sandbox image with overlay2 or vfs storage")
        old = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = host
        try:
            yield host
        finally:
            if old is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = old
    except (RuntimeError, EvalkitError) as exc:
        pytest.skip(f"docker backend not tested: {exc}")
    finally:
        if proc is not None:
            _stop_dockerd(proc)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_sandbox(docker_engine: str) -> Iterator[Sandbox]:
    with get_sandbox("docker", workers=2) as sandbox:
        yield sandbox


@pytest.fixture(params=["process", "docker"])
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """Each backend in turn (docker skips, saying why, where no engine can run)."""
    return request.getfixturevalue(f"{request.param}_sandbox")
