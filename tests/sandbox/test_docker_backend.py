"""The docker backend's own guarantees: locked-down containers, recycling, clear errors."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from evalkit.errors import EvalkitError
from evalkit.sandbox import Limits, get_sandbox
from evalkit.sandbox.docker import RUNNER_CAPS, docker_client
from evalkit.sandbox.seccomp import docker_profile
from evalkit.sandbox.selftest import leftover_processes


def test_no_engine_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(EvalkitError, match="no Docker engine is reachable"):
        get_sandbox("docker", workers=1)


def test_a_missing_image_is_a_clear_error_when_building_is_off(docker_engine):
    with pytest.raises(EvalkitError, match="docker build -t evalkit-sandbox:nope sandbox/"):
        get_sandbox("docker", workers=1, image="evalkit-sandbox:nope", build=False)


def test_containers_are_locked_down(docker_sandbox):
    for worker in docker_sandbox._workers:
        worker.container.reload()
        host = worker.container.attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert sorted(host["CapAdd"]) == sorted(RUNNER_CAPS)  # the runner's, never a program's
        assert "no-new-privileges" in host["SecurityOpt"]
        profile = next(o for o in host["SecurityOpt"] if o.startswith("seccomp="))
        assert json.loads(profile.removeprefix("seccomp=")) == json.loads(docker_profile())
        assert host["PidsLimit"] == 64
        assert host["NanoCpus"] == 1_000_000_000
        assert host["Memory"] > 0 and host["MemorySwap"] == host["Memory"]
        assert host["Tmpfs"]["/tmp"].startswith("size=64m,nr_inodes=65536")
        assert host["Tmpfs"]["/dev/shm"].startswith("size=16m,nr_inodes=1024")
        assert host["IpcMode"] == "private"


def test_pid_one_of_each_container_is_nobody_without_capabilities(docker_sandbox):
    result = docker_sandbox.run(
        "status = open('/proc/1/status').read().splitlines()\n"
        "print([l.split()[1:3] for l in status if l.startswith(('Uid', 'CapEff'))])\n")
    assert result.stdout.strip() == "[['65534', '65534'], ['0000000000000000']]"


@pytest.mark.slow
def test_a_timeout_kills_the_program_and_recycles_its_container(docker_engine):
    client = docker_client()
    with get_sandbox("docker", workers=1) as sandbox:
        worker = sandbox._workers[0]
        before = worker.container.id
        result = sandbox.run("import time\ntime.sleep(60)\n", Limits(timeout_s=1, cpu_s=1))
        assert result.status == "timeout"
        after = sandbox.run("print('fresh')\n")
        assert after.stdout == "fresh\n"
        assert worker.container.id != before
        assert leftover_processes(sandbox) == []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(c.id == before for c in client.containers.list(
                all=True, filters={"label": "evalkit.sandbox"})):
            time.sleep(0.2)
        assert before not in [c.id for c in client.containers.list(all=True)]


def test_closing_removes_every_container_even_mid_recycle(docker_engine):
    client = docker_client()

    def ours() -> set[str]:
        label = f"evalkit.sandbox={socket.gethostname()}:{os.getpid()}"
        return {c.id for c in client.containers.list(all=True, filters={"label": label})}

    before = ours()  # other sandboxes of this test session
    sandbox = get_sandbox("docker", workers=2)
    assert len(ours() - before) == 2
    # an output_limit result sends one worker's container to be replaced in the background
    assert sandbox.run("print('x' * 100)\n", Limits(output_bytes=10)).status == "output_limit"
    sandbox.close()
    assert ours() == before


def test_the_containers_memory_limit_follows_the_programs(docker_engine):
    with get_sandbox("docker", workers=1) as sandbox:
        worker = sandbox._workers[0]
        result = sandbox.run("print(1)", Limits(memory_mb=300))
        assert result.status == "passed", result.detail
        worker.container.reload()
        assert worker.container.attrs["HostConfig"]["Memory"] == (300 + 64 + 16) << 20
