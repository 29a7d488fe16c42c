# category: output
# expect: output_limit
# 1 GB on stdout.
import sys

chunk = "x" * (1 << 20)
for _ in range(1024):
    sys.stdout.write(chunk)
