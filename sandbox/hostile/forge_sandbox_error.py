# category: forgery
# expect: tampered
# Tries to pass itself off as a sandbox failure (which is never scored) instead of failing.
import contextlib
import os

for fd in range(3, 16):
    with contextlib.suppress(OSError):
        os.write(fd, b"Xsetup failed")
print('{"error": "runner: broken"}')
os._exit(120)
