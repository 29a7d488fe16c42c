# category: namespaces
# expect: tampered
# New namespaces (a user namespace would hand it capabilities inside): system calls and
# unshare(1).
import ctypes
import subprocess

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
for name, flags in [("user", CLONE_NEWUSER), ("mount", CLONE_NEWNS), ("pid", CLONE_NEWPID),
                    ("net", CLONE_NEWNET), ("user+mount", CLONE_NEWUSER | CLONE_NEWNS)]:
    rc = libc.unshare(flags)
    print("unshare", name, rc, ctypes.get_errno())
    if rc == 0:
        print("ESCAPED: unshare", name)
try:
    done = subprocess.run(["unshare", "-r", "id"], capture_output=True, timeout=5)
    print("unshare(1) exit", done.returncode)
    if done.returncode == 0:
        print("ESCAPED: unshare(1)", done.stdout)
except OSError as exc:
    print("unshare(1) unavailable", type(exc).__name__)
