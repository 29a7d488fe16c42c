"""evalkit's runner: the only evalkit code that runs inside a sandbox (bwrap or a container).

It is a warm interpreter that forks one child per program, so a program costs a fork instead
of an interpreter start-up; the child for the next program is forked (and set up) as soon as
the last one is done, while the client is still busy with its result. Standard library only; it
must also run on a container's python3 (3.9 or newer).

Protocol, on fd 0 (in) and fd 1 (out): frames of a 4-byte big-endian length and UTF-8 JSON.
The client sends one config frame, the runner answers {"ready": ...}; then each request
({"source", "limits"}) gets one reply with the raw facts of the run. The client classifies them.

Each child, before the program's first line: new session, fds 0-2 replaced and everything else
closed (the protocol pipes included), uid dropped to the worker's own (root mode; the runner
emptied the capability bounding set already) and no capability left (checked), the previous
program's files in /tmp and /dev/shm removed, rlimits set, seccomp filter installed, and last a
PEP 578 audit hook (``_arm_audit``), which Python code cannot remove. Afterwards every process
the program left behind is killed and reaped, and the runner checks that none is left before it
answers.

The pass signal. The runner makes a random token per program after forking the child and sends
it with the request; the child hands it to the audit hook and drops every other reference, so it
lives only in the hook's closure, which no frame, module or object the program can walk to holds
(only ``gc``, ctypes or /proc/self/mem reach it, and the hook reports each of those). The hook
writes ``P`` + token on the status fd only for the "evalkit.finish" event raised by ``_finish``
called straight from this child's own ``child_main`` frame, i.e. after the program returned; a
program calling ``_finish`` itself has its own frames in between. Each attempt to reach outside
the program (see ``WATCHED``) is written on the status fd at once, before the call returns, as
``T`` + evidence + newline; the runner reports any of them, and any bytes on that fd it did not
expect, as ``tampered``. The hook calls nothing the program can rebind (its frame holds the
token): every function it uses is bound before the program starts.
"""

import base64
import contextlib
import ctypes
import errno
import fcntl
import gc
import io
import json
import math
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback
import types

PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
STATUS_FD = 3
REQUEST_FD = 4  # the child's end of the pipe its request comes through, closed before it runs
READY_LEN = 9  # b"R" + the child's setup CPU seconds (big-endian double)
# The child's setup (mostly removing what the previous program left in /tmp) has its own clock,
# so a program that leaves a million files behind cannot eat the next program's time limit.
SETUP_TIMEOUT_S = 60.0
CPUS = 1.0  # the CPU quota of a worker's cgroup, in cores (cgroups.CPU_QUOTA_US)
# The modules HumanEval and MBPP programs import (those two import nothing else), loaded once
# here: that, and not starting an interpreter per program, is the warm start.
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "bisect",
           "string", "operator", "copy", "hashlib", "random", "array", "cmath")

# Our own references: a program that replaces os._exit or os.write must not steer us.
_exit = os._exit
_write = os.write
_audit = sys.audit
_getframe = sys._getframe
TAMPER_REPORTS = 8  # evidence lines kept per program (a loop of gc calls is one story)
# Audit events that reach outside the program's own logic, and what each one means.
WATCHED = {
    "sys._getframe": "sys._getframe reached the sandbox runner's frames",
    "sys._current_frames": "sys._current_frames (every thread's frames)",
    "sys._current_exceptions": "sys._current_exceptions (every thread's frames)",
    "gc.get_objects": "gc.get_objects (every object of the interpreter)",
    "gc.get_referrers": "gc.get_referrers",
    "gc.get_referents": "gc.get_referents",
    "sys.settrace": "sys.settrace (a tracer can skip lines, asserts included)",
    "sys.setprofile": "sys.setprofile",
    "sys.addaudithook": "sys.addaudithook (refused)",
}
# Loading these gives raw memory access; the runner drops its own ctypes before the program.
WATCHED_IMPORTS = ("ctypes", "_ctypes", "cffi", "_cffi_backend")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


# Built once in the runner so that each child only makes the system calls.
_PREPARED = {}


def _prctl(option, arg2=0, arg3=0):
    if _libc.prctl(option, arg2, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


# ---------------------------------------------------------------- framing


def read_frame(fd):
    header = _read_exact(fd, 4)
    if header is None:
        return None
    body = _read_exact(fd, struct.unpack(">I", header)[0])
    if body is None:
        return None
    return json.loads(body)


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def write_frame(fd, obj):
    body = json.dumps(obj).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(fd, data):]


# ---------------------------------------------------------------- the child (becomes the program)


def _setup_error(message):
    # Only reachable before the program starts, so the client can trust an "X" as ours.
    try:
        _write(STATUS_FD, b"X" + message.encode(errors="replace")[:500])
    finally:
        _exit(120)


def _empty_bounding_set():
    # Done once in the runner; children inherit it, so no program can regain a capability.
    for cap in range(64):
        try:
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return  # past the last capability this kernel knows


def _become_unprivileged(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _check_no_capabilities():
    # Ambient capabilities are a subset of the permitted ones, so two sets cover all three.
    header, data = _PREPARED["capget"]
    if _libc.capget(ctypes.byref(header), data) != 0:
        _setup_error(f"capget failed: {os.strerror(ctypes.get_errno())}")
    if any(d.effective or d.permitted for d in data):
        _setup_error("capabilities left after dropping privileges")


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_tree(parent_fd, name):
    """Remove directory ``name`` (in ``parent_fd``) and all under it, at any depth.

    Relative to directory descriptors, one open at a time (up through ".."), so neither
    PATH_MAX nor the descriptor limit bounds the depth, and nothing recurses. The program is
    dead by now, so nothing moves under us; symlinks are removed, never followed.
    """
    fd = _open_dir(parent_fd, name)
    names = [name]  # the path from parent_fd down to fd, as names
    while True:
        subdir = None
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    subdir = subdir or entry.name
                else:
                    os.unlink(entry.name, dir_fd=fd)
        if subdir is not None:
            child = _open_dir(fd, subdir)
            os.close(fd)
            fd = child
            names.append(subdir)
            continue
        done = names.pop()
        if not names:
            os.close(fd)
            os.rmdir(done, dir_fd=parent_fd)
            return
        up = os.open("..", _DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        fd = up
        os.rmdir(done, dir_fd=fd)


def _open_dir(parent_fd, name):
    os.chmod(name, 0o700, dir_fd=parent_fd)  # a 000 directory cannot be listed, even by owner
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _fresh_scratch(scratch_dirs):
    # The previous program's files go first: nothing may pass from one program to the next.
    for scratch in scratch_dirs:
        try:
            fd = os.open(scratch, _DIR_FLAGS)
        except FileNotFoundError:
            continue
        try:
            for entry in list(os.scandir(fd)):
                if entry.is_dir(follow_symlinks=False):
                    _remove_tree(fd, entry.name)
                else:
                    os.unlink(entry.name, dir_fd=fd)
        finally:
            os.close(fd)
    work = os.path.join(scratch_dirs[0], "work")
    os.mkdir(work, 0o700)
    os.chdir(work)


def _set_limits(limits, config, setup_cpu):
    mib = 1024 * 1024
    # RLIMIT_CPU counts the whole process, so the setup so far is added to the program's share.
    cpu = max(1, math.ceil(setup_cpu + limits["cpu_s"] - 0.05))
    # Soft limit sends SIGXCPU, the hard one a second later SIGKILL (for programs ignoring it).
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (int(limits["memory_mb"] * mib),) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["file_size_mb"] * mib),) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(limits["open_files"]),) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if config.get("nproc"):
        nproc = int(limits["processes"]) + config.get("nproc_extra", 0)
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _install_seccomp():
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(_PREPARED["seccomp"][1]))


def _prepare(config):
    if config.get("seccomp"):
        bpf = base64.b64decode(config["seccomp"])
        buf = ctypes.create_string_buffer(bpf, len(bpf))
        _PREPARED["seccomp"] = (buf, _SockFprog(len(bpf) // 8, ctypes.addressof(buf)))
    _libc.capget.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    _PREPARED["capget"] = (_CapHeader(0x20080522, 0), (_CapData * 2)())
    # The program's stdio, made here (never written to by the runner) and reused by each child.
    _PREPARED["stdio"] = (
        io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8"),
        io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8"),
        io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8",
                         errors="backslashreplace", line_buffering=True))


def _fresh_stdio():
    sys.stdin, sys.stdout, sys.stderr = _PREPARED["stdio"]
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = _PREPARED["stdio"]


def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()


def _print_traceback(exc):
    # Start at the program's frame, as `python program.py` would; ours is the first one.
    if exc.__traceback__ is not None:
        exc.__traceback__ = exc.__traceback__.tb_next
    with contextlib.suppress(Exception):
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    _flush()


def _arm_audit(token, status_fd, main_frame):
    """Install the audit hook that alone holds the token; see the module's docstring."""
    # Bound now, so that nothing the program rebinds (os.write, builtins) runs inside the hook.
    write, fstat, kill, getpid, sigkill = os.write, os.fstat, os.kill, os.getpid, signal.SIGKILL
    frame_type, text_types = types.FrameType, (str, bytes)
    runner_globals, finish_code = globals(), _finish.__code__
    watched, watched_imports = dict(WATCHED), frozenset(WATCHED_IMPORTS)
    pipe = fstat(status_fd)
    pipe_id = (pipe.st_dev, pipe.st_ino)
    status_path = f"/fd/{status_fd}"
    reports = [0]

    def report(what):
        if reports[0] >= TAMPER_REPORTS:
            return
        reports[0] += 1
        try:
            now = fstat(status_fd)
            same = (now.st_dev, now.st_ino) == pipe_id
        except OSError:
            same = False
        if not same:  # the program moved our channel away first: it gets no chance to go on
            kill(getpid(), sigkill)
        line = what.encode("utf-8", "backslashreplace").replace(b"\n", b" ")[:300]
        write(status_fd, b"T" + line + b"\n")

    def hook(event, args):
        try:
            if event == "open":
                path = args[0]
                if type(path) in text_types:  # never call a path object's own methods here
                    text = path.decode("utf-8", "replace") if type(path) is bytes else path
                    name = text.rstrip("/").rsplit("/", 1)[-1]
                    if name == "mem" or (text.startswith("/proc/")
                                         and text.rstrip("/").endswith(status_path)):
                        report("opened " + text[:200])
                return
            if event == "import":
                if type(args[0]) is str and args[0] in watched_imports:
                    report("imported " + args[0])
                return
            if event == "evalkit.finish":
                frame = args[0] if args else None
                if (type(frame) is frame_type and frame.f_code is finish_code
                        and frame.f_back is main_frame):
                    write(status_fd, b"P" + token)
                else:
                    report("raised the sandbox's finish event itself")
                return
            if event[:7] == "ctypes.":
                report(event + " (raw memory and C calls)")
                return
            what = watched.get(event)
            if what is None:
                return
            if event == "sys._getframe":
                frame = args[0] if args else None
                if type(frame) is not frame_type or frame.f_globals is not runner_globals:
                    return  # the program's own frames, or the library's
                if frame.f_code is finish_code:
                    return  # _finish marking itself
            report(what)
        except Exception:
            if event == "sys.addaudithook":
                raise
            return  # a hook that fails must not break an innocent program
        if event == "sys.addaudithook":
            raise RuntimeError("no")  # refuses the new hook; Python swallows the error

    sys.addaudithook(hook)


def _drop_ctypes():
    # The runner used ctypes; the program must import it (and so be seen) to use it.
    for name in [name for name in sys.modules if name.split(".")[0] in ("ctypes", "_ctypes")]:
        del sys.modules[name]


def _exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def child_main(config, request_r, out_w, err_w, status_w):
    os.setsid()
    devnull = os.open("/dev/null", os.O_RDONLY)
    # Lift every source above the targets first, so no dup2 overwrites one still to be moved.
    sources = [fcntl.fcntl(fd, fcntl.F_DUPFD, 16)
               for fd in (devnull, out_w, err_w, status_w, request_r)]
    for target, src in enumerate(sources):  # 0 stdin, 1 stdout, 2 stderr, 3 status, 4 request
        os.dup2(src, target)
    os.closerange(REQUEST_FD + 1, 1 << 16)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the runner ignores it
    try:
        # The kernel's OOM killer must pick the program, never the runner beside it (in a
        # container both are in one memory cgroup, and memfd pages are in nobody's RSS).
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        os.write(fd, b"1000")
        os.close(fd)
        if config.get("uid") is not None:
            _become_unprivileged(config["uid"])
        if config.get("isolated"):
            _check_no_capabilities()
        _prctl(PR_SET_DUMPABLE, 1)  # the runner is not; a program may read its own /proc files
        _fresh_scratch(config["scratch"])
        # Ready for a program: wait for it (the runner forks us ahead of time, see spawn_child).
        request = read_frame(REQUEST_FD)
        if request is None:  # the runner is shutting down
            _exit(0)
        os.close(REQUEST_FD)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        setup_cpu = usage.ru_utime + usage.ru_stime
        _set_limits(request["limits"], config, setup_cpu)
        if "seccomp" in _PREPARED:
            _install_seccomp()
    except Exception as exc:
        _setup_error(f"{type(exc).__name__}: {exc}")
    _fresh_stdio()  # (random reseeds itself in a forked child: it registers an at-fork hook)
    main = types.ModuleType("__main__")
    main.__file__ = "program.py"
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = ["program.py"]
    source = request["source"]
    token = request.pop("token").encode()
    del request, config
    _drop_ctypes()
    _arm_audit(token, STATUS_FD, _getframe())
    del token
    # "Ready": the program's clocks start now. From here on, fd 3 is the program's to abuse.
    _write(STATUS_FD, b"R" + struct.pack(">d", setup_cpu))
    try:
        exec(compile(source, "program.py", "exec"), main.__dict__)
    except SystemExit as exc:
        _write(STATUS_FD, b"E")
        _flush()
        _exit(_exit_code(exc.code))
    except MemoryError as exc:
        _write(STATUS_FD, b"M")
        _print_traceback(exc)
        _exit(1)
    except BaseException as exc:
        _print_traceback(exc)
        _exit(1)
    else:
        _finish()  # the only way to the pass signal: the program returned
    _exit(1)


def _finish():
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()  # a plain interpreter waits for non-daemon threads, so do we
    _flush()
    _audit("evalkit.finish", _getframe())  # the hook checks who asks, then writes P + token
    import atexit

    atexit._run_exitfuncs()
    _flush()
    _exit(0)


# ---------------------------------------------------------------- the worker's cgroup


# In a container, the container's own cgroup (its limits set by the engine): CPU time and OOM
# kills are read from these files, v2 first.
CONTAINER_CGROUP = (
    (2, "/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/memory.events"),
    (1, "/sys/fs/cgroup/cpuacct/cpuacct.usage", "/sys/fs/cgroup/memory/memory.oom_control"),
    (1, "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage", "/sys/fs/cgroup/memory/memory.oom_control"),
)


def _container_cgroup():
    for version, cpu, oom in CONTAINER_CGROUP:
        try:
            return {"version": version, "cpu": os.open(cpu, os.O_RDONLY),
                    "oom": os.open(oom, os.O_RDONLY)}
        except OSError:
            continue
    return None


def _cgroup_baseline(cgroup):
    """What the runner (and bwrap) hold themselves: added to each program's memory limit."""
    cgroup["baseline"] = int(os.pread(cgroup["usage"], 64, 0))
    cgroup["written"] = None


def _cgroup_limit(cgroup, limits):
    """The program's limits; bwrap and the runner are in the cgroup too: two more tasks, and
    their own memory (measured once) on top."""
    if "memory" not in cgroup:  # a container's cgroup: the engine sets its limits
        return
    wanted = (int(limits["memory_mb"] * 1024 * 1024) + cgroup["baseline"],
              int(limits["processes"]) + 2)
    if wanted != cgroup["written"]:
        os.write(cgroup["memory"], str(wanted[0]).encode())
        os.write(cgroup["pids"], str(wanted[1]).encode())
        cgroup["written"] = wanted


def _cgroup_cpu(cgroup):
    """CPU seconds used by every process that was ever in the cgroup."""
    text = os.pread(cgroup["cpu"], 4096, 0).decode()
    if cgroup["version"] == 1:
        return int(text) / 1e9  # cpuacct.usage: nanoseconds
    fields = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
    return int(fields["usage_usec"]) / 1e6


def _cgroup_oom_kills(cgroup):
    text = os.pread(cgroup["oom"], 4096, 0).decode()
    fields = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
    return int(fields.get("oom_kill", 0))


# ---------------------------------------------------------------- supervision


def _reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _proc_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _descendants(root):
    children = {}
    for pid in _proc_pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def _leftovers(pidns):
    me = os.getpid()
    if pidns:
        # Our own pid namespace: anything but its init (maybe us) was started by a program.
        return [pid for pid in _proc_pids() if pid not in (1, me)]
    return _descendants(me)


def _kill_all(pidns):
    if pidns:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)  # spares only init and ourselves
        return
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _sweep(pidns, seconds=3.0):
    deadline = time.monotonic() + seconds
    while True:
        _kill_all(pidns)
        _reap_all()
        left = _leftovers(pidns)
        if not left:
            return []
        if time.monotonic() > deadline:
            return left
        time.sleep(0.001)


def _read_some(fd, sink, budget):
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return 0, True
    if data:
        sink.append(data[:max(budget, 0)])
    return len(data), bool(data)


def _budget(fd, status_fd, sinks, cap, total):
    if fd == status_fd:
        return 4096 - sum(map(len, sinks[fd]))
    return cap - total


class _Child:
    """A forked child waiting for its program, and the runner's ends of its pipes."""

    def __init__(self, config):
        request_r, self.request_w = os.pipe()
        with contextlib.suppress(OSError):  # a request up to 1 MiB is handed over at once
            fcntl.fcntl(self.request_w, fcntl.F_SETPIPE_SZ, 1 << 20)
        self.out, out_w = os.pipe()
        self.err, err_w = os.pipe()
        self.status, status_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                child_main(config, request_r, out_w, err_w, status_w)
            finally:
                _exit(121)
        # Made after the fork, so the child's copy of this object never held it.
        self.token = os.urandom(16).hex()
        for fd in (request_r, out_w, err_w, status_w):
            os.close(fd)
        self.pidfd = os.pidfd_open(self.pid)


def spawn_child(config):
    """Fork the next program's process before its request comes.

    The fork and the setup (uid, scratch cleanup) then overlap with the client's round trip
    instead of adding to it; the child blocks until the request arrives.
    """
    return _Child(config)


def run_one(config, request, child):
    limits = request["limits"]
    pidns = bool(config.get("pidns"))
    cgroup = config.get("cgroup")
    if cgroup:
        _cgroup_limit(cgroup, limits)
    handed = time.monotonic()
    with contextlib.suppress(BrokenPipeError):  # a child that died in setup says why on fd 3
        write_frame(child.request_w, {**request, "token": child.token})
    os.close(child.request_w)
    out_r, err_r, st_r = child.out, child.err, child.status
    sinks = {out_r: [], err_r: [], st_r: []}
    poller = select.poll()
    for fd in (*sinks, child.pidfd):
        poller.register(fd, select.POLLIN)
    cap = int(limits["output_bytes"])
    total = 0
    started = None  # when the child said "ready": the program's wall clock starts there
    deadline = handed + SETUP_TIMEOUT_S
    timed_out = overflow = exited = cpu_exceeded = False
    cpu_start = oom_start = 0
    check_cpu = math.inf  # when the cgroup could next have used up the program's CPU time
    while not (exited or overflow):
        if started is None and sum(map(len, sinks[st_r])) >= READY_LEN:
            started = time.monotonic()
            deadline = started + limits["timeout_s"]
            if cgroup:
                cpu_start, oom_start = _cgroup_cpu(cgroup), _cgroup_oom_kills(cgroup)
                check_cpu = started + limits["cpu_s"] / CPUS
        now = time.monotonic()
        if now >= check_cpu:
            left = limits["cpu_s"] - (_cgroup_cpu(cgroup) - cpu_start)
            if left <= 0:
                cpu_exceeded = True
                break
            check_cpu = now + max(0.005, left / CPUS)
        remaining = min(deadline, check_cpu) - now
        if now >= deadline:
            timed_out = True
            break
        for fd, _ in poller.poll(remaining * 1000):
            if fd == child.pidfd:
                exited = True
                continue
            n, more = _read_some(fd, sinks[fd], _budget(fd, st_r, sinks, cap, total))
            if fd != st_r:
                total += n
            if not more:
                poller.unregister(fd)
        overflow = total > cap
    ended = time.monotonic()
    if not exited:
        _kill_all(pidns)
    _, status, usage = os.wait4(child.pid, 0)
    os.close(child.pidfd)
    left = _sweep(pidns)
    # Everyone holding a pipe end is dead now: what is left in the pipes is all there is.
    for fd, sink in sinks.items():
        os.set_blocking(fd, False)
        while True:
            n, more = _read_some(fd, sink, _budget(fd, st_r, sinks, cap, total))
            if fd != st_r:
                total += n
            if not more or n == 0:
                break
        os.close(fd)
    channel = b"".join(sinks[st_r])
    ready = channel[:1] == b"R" and len(channel) >= READY_LEN
    setup_cpu = struct.unpack(">d", channel[1:READY_LEN])[0] if ready else 0.0
    cpu_s = max(0.0, usage.ru_utime + usage.ru_stime - setup_cpu)  # the program's process
    oom_killed = False
    if cgroup and started is not None:  # every process of the program, children included
        cpu_s = _cgroup_cpu(cgroup) - cpu_start
        cpu_exceeded = cpu_exceeded or cpu_s > limits["cpu_s"]
        oom_killed = _cgroup_oom_kills(cgroup) > oom_start
    return {
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall_s": round(ended - (started or handed), 6),
        "cpu_s": round(cpu_s, 6),
        "cpu_exceeded": cpu_exceeded and ready,
        "oom_killed": oom_killed,
        "maxrss_kb": usage.ru_maxrss,
        "stdout": b"".join(sinks[out_r]).decode("utf-8", "replace"),
        "stderr": b"".join(sinks[err_r]).decode("utf-8", "replace"),
        "timed_out": timed_out and ready,
        "output_exceeded": overflow or total > cap,
        **_read_status(channel, child.token.encode(), timed_out),
        "leftover_pids": left,
    }


def _read_status(data, token, timed_out):
    """What the status channel says: the setup's fate, then the program's markers.

    After "R": ``E`` (SystemExit), ``M`` (MemoryError), ``P`` + token (ran to the end) and the
    audit hook's ``T`` + evidence + newline, in any order. Anything else was written by the
    program, which is evidence too.
    """
    if data.startswith(b"X"):
        return {"status": "setup_error: " + data[1:].decode(errors="replace"), "evidence": []}
    if data[:1] != b"R" or len(data) < READY_LEN:
        return {"status": "setup_timeout" if timed_out else "not_started", "evidence": []}
    rest, evidence, markers = data[READY_LEN:], [], set()
    while rest:
        kind = rest[:1]
        if kind == b"T" and b"\n" in rest:
            line, rest = rest[1:].split(b"\n", 1)
            evidence.append(line.decode("utf-8", "replace"))
        elif kind == b"P" and rest[1 : 1 + len(token)] == token:
            markers.add("P")
            rest = rest[1 + len(token) :]
        elif kind in (b"E", b"M"):
            markers.add(kind.decode())
            rest = rest[1:]
        else:
            evidence.append(f"wrote on the sandbox's status channel: {rest[:60]!r}")
            break
    status = ("completed" if "P" in markers else "system_exit" if "E" in markers
              else "memory_error" if "M" in markers else "no_signal")
    return {"status": status, "evidence": evidence}


# ---------------------------------------------------------------- server


def serve(once):
    config = read_frame(0)
    if config is None:
        return
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans come to us, so we can reap and count them
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a program must not interrupt us
    _prctl(PR_SET_DUMPABLE, 0)  # a program with our uid must not read or poke our memory
    if config.get("uid") is not None:
        _empty_bounding_set()
    _prepare(config)
    if config.get("container_cgroup"):
        config["cgroup"] = _container_cgroup()
    if config.get("preload"):
        for name in PRELOAD:
            with contextlib.suppress(ImportError):
                __import__(name)
    gc.collect()
    gc.freeze()  # keeps forked children from copying the runner's pages when their GC runs
    if config.get("cgroup") and "usage" in config["cgroup"]:
        _cgroup_baseline(config["cgroup"])
    write_frame(1, {"ready": True, "pid": os.getpid(), "uid": os.getuid(),
                    "python": sys.version.split()[0]})
    while True:
        # The last program's child (and its spent token) must not be in the next child's copy.
        child = None
        child = None if once else spawn_child(config)
        request = read_frame(0)
        if request is None:
            return  # the client is gone; so is our namespace and the waiting child with it
        try:
            reply = run_one(config, request, child or spawn_child(config))
        except Exception as exc:
            reply = {"error": f"runner: {type(exc).__name__}: {exc}",
                     "trace": traceback.format_exc()[-2000:]}
        write_frame(1, reply)
        if once:
            return


if __name__ == "__main__":
    serve(once="--once" in sys.argv)
