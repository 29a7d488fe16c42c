# category: processes
# expect: passed
# A classic daemon: double fork, new session, keeps stdout open. The run must still end at
# once when the program does, and the daemon must die with it.
import os
import subprocess
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            print("daemon alive", flush=True)
            time.sleep(0.5)
    os._exit(0)
subprocess.Popen(["sleep", "3600"], start_new_session=True)
print("parent done")
