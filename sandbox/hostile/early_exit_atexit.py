# category: early exit
# expect: failed
# Registers an exit hook that claims success, then exits from inside a test.
import atexit
import os

atexit.register(lambda: os._exit(0))


def check():
    raise SystemExit(0)


check()
raise AssertionError("the tests ran")
