# category: memory
# expect: oom
# limits: memory_mb=256 timeout_s=20 cpu_s=10
# memfd pages are not in the address space RLIMIT_AS counts: 60 memfds of 15 MiB each (under
# the file size limit) hold 900 MiB under a 256 MB limit.
import os

chunk = b"x" * (1 << 20)
for i in range(60):
    fd = os.memfd_create(f"hoard{i}")
    for _ in range(15):
        os.write(fd, chunk)
print("ESCAPED: held 900 MiB in memfds under a 256 MB limit")
