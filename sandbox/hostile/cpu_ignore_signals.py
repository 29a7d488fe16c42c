# category: cpu
# expect: timeout
# Ignores SIGXCPU and every catchable signal and swallows exceptions: the hard limit's SIGKILL
# (or the wall clock) must still end it.
import signal

for sig in (signal.SIGXCPU, signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
while True:
    try:
        while True:
            pass
    except BaseException:
        pass
