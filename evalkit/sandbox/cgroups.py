"""A cgroup per sandbox worker: memory, pids and CPU limits the kernel counts for the whole
program, children and kernel-side memory included.

Rlimits count one process at a time and miss what matters: RLIMIT_AS does not see memfd pages,
tmpfs or /dev/shm files or inodes; RLIMIT_CPU lets eight children use a second each; with
autogroup, a program that calls ``setsid()`` gets a scheduling group of its own and starves a
neighbour. A memory cgroup counts anonymous memory, memfd and tmpfs pages, page cache and kernel
objects; a pids cgroup counts every task; a CPU quota of one core per worker keeps a hog to its
own core and takes the program out of autogroup scheduling; the CPU accounting sums every
process the program made.

cgroup v2 where its memory, pids and cpu controllers can be had below our own cgroup (modern
distributions; needs root or a delegated subtree), else the v1 ``memory``, ``pids``, ``cpu`` and
``cpuacct`` hierarchies (older machines and these development VMs). The worker's cgroup is made
here, on the host, and the worker's bubblewrap starts inside it (``join``), so the runner and
every program it forks are in it from birth: moving a process into a cgroup takes the kernel
milliseconds, too slow to pay per program. The runner inside the sandbox gets open file
descriptors of the few files it needs (it sees no /sys): it writes each program's memory limit
(plus its own resident memory, measured once) and pids limit before the program starts, reads
the CPU time and the OOM-kill count around it, and kills everything but itself after it.
``close`` removes the cgroup.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from evalkit.errors import EvalkitError

CPU_PERIOD_US = 100_000
CPU_QUOTA_US = 100_000  # one core per worker
# The runner and its program share the worker's group, where each used to be scheduled as a
# task (a group) of its own: twice the default weight keeps their share under contention.
CPU_SHARES_V1, CPU_WEIGHT_V2 = 2048, 200
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
V2_CONTROLLERS = ("memory", "pids", "cpu")


class CgroupUnavailable(EvalkitError):
    """No cgroup can be made here; the message says why and what would fix it."""


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, super options) of every cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = [*right.split(), "", ""][:3]
        if fstype in ("cgroup", "cgroup2"):
            found.append((left.split()[4], fstype, set(options.split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Our cgroup per v1 controller ("memory": "/a/b"), and "" for the v2 one."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


class WorkerCgroup:
    """One worker's cgroup (one directory per v1 hierarchy, or one v2 directory)."""

    def __init__(self, label: str):
        self.dirs: list[Path] = []
        self.version = 0
        self._fds: dict[str, int] = {}
        name = f"evalkit-{label}-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            self._make(name)
        except BaseException:
            self.close()
            raise

    def _make(self, name: str) -> None:
        mounts, own = _mounts(), _own_paths()
        v2 = [m for m in mounts if m[1] == "cgroup2"]
        reasons = []
        for mount, _, _ in v2:
            parent = Path(mount) / own.get("", "/").lstrip("/")
            try:
                self._make_v2(parent, name)
                return
            except (OSError, CgroupUnavailable) as exc:
                reasons.append(f"v2 at {parent}: {exc}")
                self.close()
        try:
            self._make_v1(mounts, own, name)
            return
        except (OSError, CgroupUnavailable) as exc:
            reasons.append(f"v1: {exc}")
            self.close()
        raise CgroupUnavailable("; ".join(reasons) or "no cgroup file system is mounted")

    def _make_v2(self, parent: Path, name: str) -> None:
        available = set((parent / "cgroup.controllers").read_text().split())
        missing = [c for c in V2_CONTROLLERS if c not in available]
        if missing:
            raise CgroupUnavailable(f"controllers {', '.join(missing)} not delegated here")
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if not set(V2_CONTROLLERS) <= enabled:  # fails where our own cgroup holds processes
            (parent / "cgroup.subtree_control").write_text(
                " ".join(f"+{c}" for c in V2_CONTROLLERS))
        path = parent / name
        path.mkdir()
        self.dirs.append(path)
        self.version = 2
        (path / "cpu.max").write_text(f"{CPU_QUOTA_US} {CPU_PERIOD_US}")
        (path / "cpu.weight").write_text(str(CPU_WEIGHT_V2))
        with contextlib.suppress(OSError):  # no swap configured: no file
            (path / "memory.swap.max").write_text("0")
        self._open(path, procs="cgroup.procs", memory="memory.max", pids="pids.max",
                   cpu="cpu.stat", oom="memory.events", usage="memory.current")

    def _make_v1(self, mounts: list, own: dict[str, str], name: str) -> None:
        where: dict[str, Path] = {}
        for controller in V1_CONTROLLERS:
            mount = next((m[0] for m in mounts if m[1] == "cgroup" and controller in m[2]), None)
            if mount is None:
                raise CgroupUnavailable(f"the {controller} controller is not mounted")
            where[controller] = Path(mount) / own.get(controller, "/").lstrip("/") / name
        for path in dict.fromkeys(where.values()):  # cpu,cpuacct may share one hierarchy
            path.mkdir()
            self.dirs.append(path)
        self.version = 1
        (where["cpu"] / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
        (where["cpu"] / "cpu.cfs_quota_us").write_text(str(CPU_QUOTA_US))
        (where["cpu"] / "cpu.shares").write_text(str(CPU_SHARES_V1))
        memory = where["memory"]
        for path in self.dirs:
            self._fds[f"procs:{path}"] = os.open(path / "cgroup.procs", os.O_WRONLY)
        self._open(memory, memory="memory.limit_in_bytes", oom="memory.oom_control",
                   usage="memory.usage_in_bytes")
        self._open(where["pids"], pids="pids.max")
        self._open(where["cpuacct"], cpu="cpuacct.usage")

    def _open(self, path: Path, **files: str) -> None:
        for key, filename in files.items():
            flags = os.O_WRONLY if key in ("procs", "memory", "pids") else os.O_RDONLY
            self._fds[key if key != "procs" else f"procs:{path}"] = os.open(path / filename, flags)

    def join(self) -> None:
        """Move the calling process into this cgroup (in a child, before it execs)."""
        for key, fd in self._fds.items():
            if key.startswith("procs:"):
                os.write(fd, b"0")

    def fds(self) -> list[int]:
        """The descriptors the runner needs (to pass into the sandbox)."""
        return [fd for key, fd in self._fds.items() if not key.startswith("procs:")]

    def runner_config(self) -> dict:
        """What the runner gets: descriptor numbers (valid in the sandbox: passed as they are)."""
        return {"version": self.version, **{key: fd for key, fd in self._fds.items()
                                              if not key.startswith("procs:")}}

    def close(self) -> None:
        """Close the descriptors and remove the directories (once their processes are gone)."""
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = {}
        for path in self.dirs:
            for _ in range(100):  # processes killed a moment ago may still be leaving
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        self.dirs = []
