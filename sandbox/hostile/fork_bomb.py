# category: processes
# expect: timeout
# A fork bomb that ignores EAGAIN: every process keeps forking forever.
import contextlib
import os

while True:
    with contextlib.suppress(OSError):
        os.fork()
