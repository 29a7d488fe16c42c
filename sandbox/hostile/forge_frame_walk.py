# category: forgery
# expect: tampered
# Walks sys._getframe back into the runner's frames looking for the pass token, writes every
# candidate on the status channel, then fails its test.
import contextlib
import os
import re
import sys

frame, found = sys._getframe(1), set()
while frame is not None:
    for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
        for text in (value, getattr(value, "token", None)):
            if isinstance(text, str):
                text = text.encode()
            if isinstance(text, bytes) and re.fullmatch(rb"[0-9a-f]{32}", text):
                found.add(text)
    frame = frame.f_back
for token in found:
    with contextlib.suppress(OSError):
        os.write(3, b"P" + token)
print("ESCAPED: token found in the runner's frames" if found else "no token in any frame")
assert 1 + 1 == 3
