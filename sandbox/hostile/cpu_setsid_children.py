# category: cpu
# expect: timeout
# limits: timeout_s=20 cpu_s=2
# Each of 7 children (in a session of their own) stays under a per-process CPU limit; together
# they use 10 CPU-seconds. The program's CPU time is its whole cgroup's.
import os
import time

children = []
for _ in range(7):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        end = time.process_time() + 1.5
        while time.process_time() < end:
            pass
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print("ESCAPED: 10 CPU-seconds under a 2 s limit")
