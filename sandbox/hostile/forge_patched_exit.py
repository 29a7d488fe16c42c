# category: forgery
# expect: failed
# Replaces the functions a harness uses to exit and to report, then fails its test: the
# failure must not slip through to the pass signal.
import builtins
import os
import sys

os._exit = lambda *args: None
os.write = lambda fd, data: len(data)
sys.exit = lambda *args: None
builtins.SystemExit = AssertionError
assert 1 + 1 == 3, "wrong answer"
