# category: disk
# expect: passed
# Fills /tmp and /dev/shm until refused (both are size-capped) and leaves the files there.
import os

written = 0
for scratch in ("/tmp", "/dev/shm"):
    for i in range(1000):
        try:
            with open(os.path.join(scratch, f"fill-{i}"), "wb") as f:
                f.write(b"\0" * (8 << 20))
            written += 8
        except OSError as exc:
            print("refused in", scratch, "after", i, "files:", type(exc).__name__)
            break
print("wrote MiB", written)
if written >= 8000:
    print("ESCAPED: no size cap")
