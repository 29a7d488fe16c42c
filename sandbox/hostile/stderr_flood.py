# category: output
# expect: output_limit
# 1 GB on stderr, written straight to the file descriptor.
import os

chunk = b"e" * (1 << 20)
for _ in range(1024):
    os.write(2, chunk)
