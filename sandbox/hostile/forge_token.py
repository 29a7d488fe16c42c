# category: forgery
# expect: tampered
# Tries to fake the pass signal: writes plausible tokens on every descriptor, prints "passed",
# then leaves without running its tests.
import contextlib
import os

for fd in range(3, 64):
    for fake in (b"P", b"RP" + b"0" * 32, b"P" + os.urandom(16).hex().encode()):
        with contextlib.suppress(OSError):
            os.write(fd, fake)
print("passed")
os._exit(0)
