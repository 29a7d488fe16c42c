# category: early exit
# expect: failed
# os._exit(0) skips everything, cleanup included.
import os


def add(a, b):
    return a - b


os._exit(0)
assert add(1, 2) == 3
