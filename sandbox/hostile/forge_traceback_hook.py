# category: forgery
# expect: tampered
# Replaces the hooks a runner calls when a program fails (traceback printing, excepthook) with
# one that calls the runner's own pass function, then fails.
import sys
import traceback


def hijack(*args, **kwargs):
    frame = sys._getframe(1)
    while frame is not None:
        finish = frame.f_globals.get("_finish")
        if callable(finish):
            finish()
        frame = frame.f_back


traceback.print_exception = hijack
traceback.print_exc = hijack
sys.excepthook = hijack
assert 1 + 1 == 3
