# category: processes
# expect: passed
# Starts threads until refused; the task limit (threads count) must refuse it early.
import threading
import time

started = 0
try:
    for _ in range(2000):
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        started += 1
except RuntimeError:
    pass
print("threads", started)
if started >= 2000:
    print("ESCAPED: no thread limit")
assert started < 2000
