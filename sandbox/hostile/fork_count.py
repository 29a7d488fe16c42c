# category: processes
# expect: passed
# Tries to start 50 processes that outlive it; the process limit must stop it well short.
import os
import time

started = 0
for _ in range(50):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    started += 1
print("started", started)
if started >= 50:
    print("ESCAPED: no process limit")
assert started < 50
