# category: forgery
# expect: tampered
# Reads its own memory through /proc/self/mem looking for the pass token.
import contextlib
import os
import re

found = set()
with contextlib.suppress(OSError), open("/proc/self/maps") as maps, \
        open("/proc/self/mem", "rb", 0) as mem:
    for line in maps:
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if "rw" not in line.split()[1] or end - start > 64 << 20:
            continue
        with contextlib.suppress(OSError, ValueError, OverflowError):
            mem.seek(start)
            found.update(re.findall(rb"[0-9a-f]{32}", mem.read(end - start)))
for token in list(found)[:50]:
    with contextlib.suppress(OSError):
        os.write(3, b"P" + token)
assert 1 + 1 == 3
