# category: mounts
# expect: tampered
# Tries to remount the root read-write (system call and mount(8)), then to write to /usr.
import ctypes
import subprocess

libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT, MS_BIND = 32, 4096
for target in (b"/", b"/usr", b"/tmp"):
    rc = libc.mount(None, target, None, MS_REMOUNT | MS_BIND, None)
    print("mount remount", target, rc, ctypes.get_errno())
    if rc == 0:
        print("ESCAPED: remounted", target)
rc = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
print("mount tmpfs", rc)
if rc == 0:
    print("ESCAPED: mounted a tmpfs")
try:
    done = subprocess.run(["mount", "-o", "remount,rw", "/"], capture_output=True, timeout=5)
    print("mount(8) exit", done.returncode)
except OSError as exc:
    print("mount(8) unavailable", type(exc).__name__)
try:
    with open("/usr/evalkit-pwned", "w") as f:
        f.write("pwned")
    print("ESCAPED: wrote /usr")
except OSError as exc:
    print("blocked /usr write", type(exc).__name__)
