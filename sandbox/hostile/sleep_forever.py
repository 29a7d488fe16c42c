# category: cpu
# expect: timeout
# Uses no CPU at all: only the wall-clock limit can end it.
import time

time.sleep(3600)
