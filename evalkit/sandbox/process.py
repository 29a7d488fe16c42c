"""Process backend: each worker is a warm runner inside its own bubblewrap sandbox.

Layers, outermost first: namespaces (pid, net, ipc, uts, mount, cgroup; user when not root), a
read-only root holding only /usr, the interpreter's prefix and the runner, size-capped private
/tmp and /dev/shm, a scrubbed environment, all capabilities dropped (the runner keeps SETUID,
SETGID, SETPCAP and KILL to drop each program to its slot's uid and to kill what it leaves
behind), a seccomp filter (on the runner and again on each program), and per-program rlimits.

Also the ``none`` backend: the same runner with no isolation at all, for trusted code only.
"""

# size: one backend (bwrap command line, per-worker cgroup and tmpfs mounts, runner protocol)
# whose parts share the worker's lifetime; split further they would only pass it around.
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from evalkit.errors import EvalkitError
from evalkit.sandbox.base import (
    GRACE_S,
    FrameReader,
    Sandbox,
    UidBlock,
    encode_frame,
    log,
    runner_path,
    spawn,
)
from evalkit.sandbox.cgroups import CgroupUnavailable, WorkerCgroup
from evalkit.sandbox.result import Limits, SandboxResult, classify, sandbox_error

INSTALL_HINT = "install bubblewrap (`apt-get install bubblewrap`) or pick --sandbox docker"
START_TIMEOUT_S = 30.0
TMP_MB = 64
SHM_MB = 16
# A flood of empty files costs kernel memory that no size= counts: cap the inodes too.
TMP_INODES = 65536  # about 64 MB of kernel memory at most, counted by the memory cgroup
SHM_INODES = 1024
RUNNER_IN_SANDBOX = "/opt/evalkit/runner.py"
# Capabilities the runner keeps; each program loses all of them before its first line.
RUNNER_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_KILL")
PROGRAM_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
               "TMPDIR": "/tmp"}


def interpreter() -> tuple[Path, Path]:
    """The real interpreter behind this (possibly venv) Python, and the prefix it needs."""
    prefix = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidate = prefix / "bin" / f"python{version}"
    exe = candidate if candidate.exists() else Path(os.path.realpath(sys.executable))
    return exe, prefix


def _parent_dirs(path: Path) -> list[str]:
    # bwrap (as root) creates missing parents 0700, which a dropped uid cannot traverse.
    args: list[str] = []
    for parent in reversed(path.parents[:-1]):
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _mount_args(runner: Path) -> list[str]:
    exe, prefix = interpreter()
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    # The interpreter at its real path: moved elsewhere it can load a different libpython.
    for needed in (prefix, exe.parent):
        if not needed.is_relative_to("/usr"):
            args += [*_parent_dirs(needed), "--ro-bind", str(needed), str(needed)]
    args += _parent_dirs(Path(RUNNER_IN_SANDBOX))
    args += ["--ro-bind", str(runner), RUNNER_IN_SANDBOX]
    return args


def bwrap_command(seccomp_fd: int, as_root: bool, scratch: dict[str, str] | None = None
                  ) -> list[str]:
    """``scratch``: host tmpfs mounts to bind at /tmp and /dev/shm (see ``capped_tmpfs``);
    without, bwrap's own tmpfs, capped in size only (bwrap has no inode option)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise EvalkitError(f"the process sandbox needs bubblewrap, which is not installed: "
                           f"{INSTALL_HINT}")
    # --as-pid-1: the runner is the namespace's init, which no process inside can kill.
    cmd = [bwrap, "--unshare-pid", "--as-pid-1", "--unshare-net", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session",
           "--hostname", "sandbox"]
    if not as_root:
        cmd.append("--unshare-user")
    cmd += ["--clearenv"]
    for key, value in PROGRAM_ENV.items():
        cmd += ["--setenv", key, value]
    cmd += _mount_args(runner_path())
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    if scratch:
        cmd += ["--bind", scratch["/tmp"], "/tmp", "--bind", scratch["/dev/shm"], "/dev/shm"]
    else:
        cmd += ["--perms", "1777", "--size", str(TMP_MB << 20), "--tmpfs", "/tmp",
                "--perms", "1777", "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm"]
    cmd += ["--remount-ro", "/dev", "--remount-ro", "/",
            "--seccomp", str(seccomp_fd), "--cap-drop", "ALL"]
    if as_root:
        for cap in RUNNER_CAPS:
            cmd += ["--cap-add", cap]
    cmd += ["--chdir", "/tmp", str(interpreter()[0]), "-I", "-S", "-B", RUNNER_IN_SANDBOX]
    return cmd


def capped_tmpfs(size_mb: int, inodes: int) -> str:
    """A fresh tmpfs with ``size=`` and ``nr_inodes=``, mounted (needs root) at a new directory.

    bwrap binds it into the sandbox; ``detach`` then removes it from the host right after the
    sandbox started (the sandbox's mount namespace keeps its own reference), so nothing is left
    mounted on the host even if evalkit dies.
    """
    import ctypes

    path = tempfile.mkdtemp(prefix="evalkit-scratch-")
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"size={size_mb}m,nr_inodes={inodes},mode=1777".encode()
    if libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        os.rmdir(path)
        raise OSError(err, f"mount tmpfs at {path}: {os.strerror(err)}")
    return path


def detach(path: str) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).umount2(path.encode(), MNT_DETACH)
    with contextlib.suppress(OSError):
        os.rmdir(path)


MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2


class RunnerWorker:
    """One warm runner process; subclasses say how it is started and configured."""

    label = "process"

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._reader: FrameReader | None = None
        self._stderr: IO[bytes] | None = None

    # How many of _command's descriptors start() closes once passed (the rest have an owner).
    _own_fds = 1

    def _command(self) -> tuple[list[str], tuple[int, ...]]:
        raise NotImplementedError

    def _preexec(self) -> Callable[[], None] | None:
        return None

    def _config(self) -> dict:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        # Nothing of ours reaches the sandbox: bwrap's own environ is readable as /proc/1/environ.
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def start(self) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the runner)
        cmd, fds = self._command()
        try:
            self._proc = spawn(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                pass_fds=fds, env=self._env(), start_new_session=True,
                preexec_fn=self._preexec())
        except OSError as exc:
            raise EvalkitError(f"the {self.label} sandbox does not start: {cmd[0]}: {exc}. "
                               f"{INSTALL_HINT}") from exc
        finally:
            for fd in fds[:self._own_fds]:
                os.close(fd)
        assert self._proc.stdout is not None
        self._reader = FrameReader(self._proc.stdout.fileno())
        try:
            self._send(self._config())
            self._reader.read(START_TIMEOUT_S)
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            why = self.stderr_tail() or str(exc)
            self.close()
            raise EvalkitError(f"the {self.label} sandbox does not start: {why}. "
                               f"Check that bubblewrap works here (`bwrap --ro-bind / / true`) "
                               f"or pick --sandbox docker") from exc

    def _send(self, obj: dict) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(encode_frame(obj))
        self._proc.stdin.flush()

    def run(self, source: str, limits: Limits) -> SandboxResult:
        if self._proc is None or self._proc.poll() is not None:
            try:
                self.restart()
            except EvalkitError as exc:
                return sandbox_error(str(exc))
        assert self._reader is not None
        try:
            self._send({"source": source, "limits": limits.to_dict()})
            reply = self._reader.read(limits.timeout_s + GRACE_S)
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            detail = f"runner failed: {exc} {self.stderr_tail()}"
            self.close()
            return sandbox_error(detail)
        result = classify(reply, limits)
        if result.status == "sandbox_error":
            self.close()  # whatever broke, the next program gets a fresh sandbox
        return result

    def stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])

    def restart(self) -> None:
        self.close()
        self.start()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            # The runner first (its namespace dies with it), then bwrap: bwrap's die-with-parent
            # cannot cover a bwrap killed before it armed it.
            for pid in [*_children(proc.pid), proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


class ProcessWorker(RunnerWorker):
    def __init__(self, uid: int | None, cgroups: bool):
        super().__init__()
        self.uid = uid
        self.cgroups = cgroups
        self.cgroup: WorkerCgroup | None = None
        self._scratch: dict[str, str] | None = None

    def _preexec(self) -> Callable[[], None] | None:
        # bwrap, hence the runner and every program it forks, is born in the worker's cgroup.
        return self.cgroup.join if self.cgroup is not None else None

    def start(self) -> None:
        if self.uid is not None:  # root: tmpfs with an inode cap, mounted for bwrap to bind
            self._scratch = {"/tmp": capped_tmpfs(TMP_MB, TMP_INODES),
                             "/dev/shm": capped_tmpfs(SHM_MB, SHM_INODES)}
        try:
            super().start()
        finally:
            for path in (self._scratch or {}).values():
                detach(path)  # the sandbox holds its own view of each
            self._scratch = None

    def runner_pid(self) -> int | None:
        """Host pid of the runner (bwrap's child), or None when not running."""
        proc = self._proc
        children = _children(proc.pid) if proc is not None else []
        return children[0] if children else None

    def _command(self) -> tuple[list[str], tuple[int, ...]]:
        from evalkit.sandbox.seccomp import filter_bpf

        fd = os.memfd_create("evalkit-seccomp", 0)  # inheritable: bwrap reads it
        os.write(fd, filter_bpf())
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            cmd = bwrap_command(fd, as_root=self.uid is not None, scratch=self._scratch)
            if not self.cgroups:
                return cmd, (fd,)
            # Its descriptors go into the sandbox under the same numbers.
            self.cgroup = WorkerCgroup(f"w{self.uid}")
            return cmd, (fd, *self.cgroup.fds())
        except BaseException:
            os.close(fd)
            raise

    def _config(self) -> dict:
        import base64

        from evalkit.sandbox.seccomp import filter_bpf

        return {"uid": self.uid, "isolated": True, "pidns": True, "preload": True,
                # As root, RLIMIT_NPROC counts the slot's own host uid. Otherwise it counts
                # per user namespace (Linux >= 5.14), where the runner shares the program's uid.
                "nproc": True, "nproc_extra": 0 if self.uid is not None else 1,
                "seccomp": base64.b64encode(filter_bpf()).decode(),
                "scratch": ["/tmp", "/dev/shm"],
                "cgroup": self.cgroup.runner_config() if self.cgroup else None}

    def close(self) -> None:
        super().close()  # the runner and its namespace first: then the cgroup is empty
        if self.cgroup is not None:
            self.cgroup.close()
            self.cgroup = None


def cgroup_problem() -> str | None:
    """None when a worker cgroup can be made here, else why not (made once and removed)."""
    try:
        WorkerCgroup("probe").close()
    except (CgroupUnavailable, OSError) as exc:
        return str(exc)
    return None


class ProcessSandbox(Sandbox):
    backend = "process"

    def __init__(self, workers: int, allow_weaker_isolation: bool = False):
        # None, or why this sandbox runs without cgroups (recorded with the run).
        self.weaker_isolation = cgroup_problem()
        if self.weaker_isolation and not allow_weaker_isolation:
            raise EvalkitError(
                f"the process sandbox cannot make a cgroup here ({self.weaker_isolation}). "
                f"Without one, memory held in memfd or tmpfs and the CPU time of a program's "
                f"children are not limited. Run as root (or in a delegated cgroup v2 subtree, "
                f"e.g. `systemd-run --user --scope -p Delegate=yes ...`), or pass "
                f"--allow-weaker-isolation to run anyway")
        if self.weaker_isolation:
            log.warning("WEAKER ISOLATION: no cgroup for the sandbox (%s); memory outside the "
                        "address space (memfd, tmpfs) and the CPU time of a program's children "
                        "are not limited, and a CPU hog can slow its neighbours into timeouts",
                        self.weaker_isolation)
        self._uids = UidBlock(workers) if os.geteuid() == 0 else None
        if self._uids is None:
            log.warning("not running as root: programs share their runner's uid (it is the "
                        "namespace's init, which they cannot kill); run as root for a separate "
                        "uid per worker")
        self.uids = [self._uids.base + i for i in range(workers)] if self._uids else []
        try:
            super().__init__([ProcessWorker(self.uids[i] if self.uids else None,
                                            cgroups=not self.weaker_isolation)
                              for i in range(workers)])
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._uids is not None:
            self._uids.release()

    def close(self) -> None:
        super().close()
        self._release()


NONE_WARNING = ("--sandbox none: generated code runs with NO isolation, as your user, with "
                "your files and network. Use it only for code you trust.")


class NoneWorker(RunnerWorker):
    label = "none"

    def __init__(self) -> None:
        super().__init__()
        self._scratch: str | None = None

    def _command(self) -> tuple[list[str], tuple[int, ...]]:
        self._scratch = tempfile.mkdtemp(prefix="evalkit-none-")
        return [str(interpreter()[0]), "-I", "-S", "-B", str(runner_path())], ()

    def _env(self) -> dict[str, str]:
        assert self._scratch is not None
        return {**PROGRAM_ENV, "HOME": self._scratch, "TMPDIR": self._scratch}

    def _config(self) -> dict:
        return {"uid": None, "isolated": False, "pidns": False, "preload": True,
                "nproc": False, "seccomp": None, "scratch": [self._scratch]}

    def close(self) -> None:
        super().close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


class NoneSandbox(Sandbox):
    """Statuses and the pass token, without any isolation. Warns every time it is made."""

    backend = "none"

    def __init__(self, workers: int):
        log.warning(NONE_WARNING)
        super().__init__([NoneWorker() for _ in range(workers)])
