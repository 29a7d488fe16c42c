# category: forgery
# expect: tampered
# Runs to the end, but writes on the sandbox's status channel on the way.
import contextlib
import os

for fd in range(3, 16):
    with contextlib.suppress(OSError):
        os.write(fd, b"P")
assert 1 + 1 == 2
