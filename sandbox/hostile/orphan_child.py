# category: processes
# expect: passed
# Leaves a child behind that would sleep for an hour: it must not outlive the run.
import os
import time

if os.fork() == 0:
    time.sleep(3600)
    os._exit(0)
print("parent done")
