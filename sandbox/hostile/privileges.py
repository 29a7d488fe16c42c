# category: privileges
# expect: tampered
# Tries to become root again, to trace the runner and to read its memory.
import ctypes
import os

escaped = []
for name, call in [("setuid(0)", lambda: os.setuid(0)), ("setgid(0)", lambda: os.setgid(0)),
                   ("chown /tmp", lambda: os.chown("/tmp", 0, 0))]:
    try:
        call()
        escaped.append(name)
    except OSError as exc:
        print("blocked", name, type(exc).__name__)
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH = 16
for pid in (1, 2, os.getppid()):
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        escaped.append(f"ptrace {pid}")
    try:
        with open(f"/proc/{pid}/mem", "rb") as f:
            f.read(1)
        escaped.append(f"/proc/{pid}/mem")
    except OSError as exc:
        print("blocked mem of", pid, type(exc).__name__)
with open("/proc/self/status") as f:
    caps = [line.split() for line in f if line.startswith(("CapEff", "CapPrm", "CapBnd"))]
print("uid", os.getuid(), "caps", caps)
if os.getuid() == 0 or any(int(value, 16) for _, value in caps):
    escaped.append("privileged")
for what in escaped:
    print("ESCAPED:", what)
assert not escaped
