"""The seccomp filter programs run under, compiled to BPF with libseccomp through ctypes.

A deny list of system calls on top of "allow": the namespaces, the dropped capabilities and the
non-root uid already stop most of these calls; the filter removes the kernel surface a program
never needs (and that the other layers would only fail on later). Sockets are an allow-list:
``socket()`` works for AF_UNIX only, every other family (IP, netlink, packet, VSOCK, which no
network namespace covers, Bluetooth, ALG, XDP, CAN, TIPC and any family a future kernel adds)
fails with EACCES (which says: the filter, not a missing kernel module). The runner installs
the same filter in each program on both backends, and ``docker_profile`` gives the same rules as
a Docker seccomp profile for the containers themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from functools import cache

from evalkit.errors import EvalkitError

# Calls with no use in a test program; each one is a known escape or kernel-attack route.
DENIED_SYSCALLS = (
    # debugging other processes / reading their memory
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # file systems and namespaces
    "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at", "quotactl", "swapon", "swapoff",
    # kernel keyring, eBPF, perf, userfaultfd, io_uring: large attack surface
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # System V IPC and POSIX message queues outlive the program inside a warm sandbox
    "shmget", "shmat", "msgget", "semget", "mq_open",
    # the machine itself
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "syslog", "vhangup", "lookup_dcookie", "nfsservctl", "iopl", "ioperm",
)

# The one socket family a program may create (multiprocessing and the runner's pipes use it).
ALLOWED_SOCKET_FAMILY = 1  # AF_UNIX

# clone() flags that create namespaces.
CLONE_NEW_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000)

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_NE = 1
_SCMP_CMP_MASKED_EQ = 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _load_libseccomp() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        lib = None  # not under its usual name: ask ldconfig (slow, hence second)
    try:
        lib = lib or ctypes.CDLL(ctypes.util.find_library("seccomp") or "", use_errno=True)
    except OSError as exc:
        raise EvalkitError(
            "libseccomp is missing, the sandbox cannot build its syscall filter: "
            "install it with `apt-get install libseccomp2`"
        ) from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _add(lib: ctypes.CDLL, ctx: int, action: int, name: str, *conds: _ArgCmp) -> None:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr == -1:  # not a syscall on this architecture
        return
    array = (_ArgCmp * len(conds))(*conds) if conds else None
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(conds), array)
    if rc < 0:
        raise EvalkitError(f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")


@cache
def filter_bpf() -> bytes:
    """The compiled filter (raw ``struct sock_filter`` array), built once per process."""
    lib = _load_libseccomp()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise EvalkitError("libseccomp could not create a filter context")
    try:
        deny = _act_errno(errno.EPERM)
        for name in DENIED_SYSCALLS:
            _add(lib, ctx, deny, name)
        # Compared on all 64 bits: a family with junk in the upper half is denied too.
        _add(lib, ctx, _act_errno(errno.EACCES), "socket",
             _ArgCmp(0, _SCMP_CMP_NE, ALLOWED_SOCKET_FAMILY, 0))
        for flag in CLONE_NEW_FLAGS:
            _add(lib, ctx, deny, "clone", _ArgCmp(0, _SCMP_CMP_MASKED_EQ, flag, flag))
        # Another process's rlimits (the runner's, when it shares the program's uid): no.
        _add(lib, ctx, deny, "prlimit64", _ArgCmp(0, _SCMP_CMP_NE, 0, 0))
        # clone3 passes its flags in memory a filter cannot read; ENOSYS makes libc use clone.
        _add(lib, ctx, _act_errno(errno.ENOSYS), "clone3")
        fd = os.memfd_create("evalkit-seccomp")
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise EvalkitError(f"libseccomp could not export the filter: {os.strerror(-rc)}")
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def docker_profile() -> str:
    """The same rules as a Docker seccomp profile (JSON for ``--security-opt seccomp=``)."""
    import json

    eperm, eacces = errno.EPERM, errno.EACCES
    rules: list[dict] = [{"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO",
                          "errnoRet": eperm},
                         {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": eacces,
                          "args": [{"index": 0, "value": ALLOWED_SOCKET_FAMILY,
                                    "op": "SCMP_CMP_NE"}]},
                         {"names": ["prlimit64"], "action": "SCMP_ACT_ERRNO", "errnoRet": eperm,
                          "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_NE"}]},
                         {"names": ["clone3"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": errno.ENOSYS}]
    rules += [{"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": eperm,
               "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}
              for flag in CLONE_NEW_FLAGS]
    return json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                       # Native ABIs only: x86's socketcall() would hide the family.
                       "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
                       "syscalls": rules})
