# category: memory
# expect: passed
# Fills /tmp and /dev/shm with files (tmpfs pages live in memory): the size caps stop it.
import os

written = 0
for folder in ("/tmp", "/dev/shm"):
    try:
        with open(os.path.join(folder, "hoard"), "wb") as f:
            for _ in range(1024):
                f.write(b"x" * (1 << 20))
                written += 1
    except OSError as exc:
        print(folder, "stopped:", exc.strerror)
if written >= 1024:
    print(f"ESCAPED: wrote {written} MiB to tmpfs")
