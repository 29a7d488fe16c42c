# category: signals
# expect: passed
# kill(-1), kill(1), the runner, its parent and a canary process of the host.
import os
import signal

CANARY_PID = int("@CANARY_PID@")
for pid in (-1, 1, 2, os.getppid(), CANARY_PID):
    try:
        os.kill(pid, signal.SIGKILL)
        print("sent SIGKILL to", pid)
    except OSError as exc:
        print("blocked", pid, type(exc).__name__)
try:
    os.killpg(1, signal.SIGKILL)
except OSError as exc:
    print("blocked killpg(1)", type(exc).__name__)
print("still here")
