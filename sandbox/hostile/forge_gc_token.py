# category: forgery
# expect: tampered
# Searches every object of the interpreter (gc) for the pass token, writes each candidate on
# the status channel, then fails its test.
import contextlib
import gc
import os
import re

found = set()
for obj in gc.get_objects():
    for value in (getattr(obj, "token", None), getattr(obj, "__closure__", None)):
        cells = value if isinstance(value, tuple) else (value,)
        for cell in cells:
            text = getattr(cell, "cell_contents", cell)
            if isinstance(text, bytes) and re.fullmatch(rb"[0-9a-f]{32}", text):
                found.add(text)
for token in found:
    with contextlib.suppress(OSError):
        os.write(3, b"P" + token)
assert 1 + 1 == 3
