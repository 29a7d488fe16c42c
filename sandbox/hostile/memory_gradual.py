# category: memory
# expect: oom
# limits: memory_mb=256 timeout_s=10
# Grows 16 MiB at a time, touching every page, until something gives.
chunks = []
while True:
    chunks.append(b"x" * (16 * 1024 * 1024))
