# category: memory
# expect: passed
# Fills /tmp and /dev/shm with files of 15 MiB (under the file size limit; tmpfs pages live in
# memory): the size caps stop it.
import os

written = 0
for folder in ("/tmp", "/dev/shm"):
    try:
        for i in range(64):
            with open(os.path.join(folder, f"hoard{i}"), "wb") as f:
                for _ in range(15):
                    f.write(b"x" * (1 << 20))
                    written += 1
    except OSError as exc:
        print(folder, "stopped:", exc.strerror)
if written >= 512:
    print(f"ESCAPED: wrote {written} MiB to tmpfs")
