# category: forgery
# expect: tampered
# A tracer that jumps over the failing assert, so the program "runs to its end".
import sys


def tracer(frame, event, arg):
    if event == "line" and frame.f_code.co_name == "check":
        frame.f_trace_lines = True
        if frame.f_lineno == CHECK_LINE:
            frame.f_lineno = CHECK_LINE + 1
    return tracer


def check():
    assert 1 + 1 == 3
    return "checked"


CHECK_LINE = check.__code__.co_firstlineno + 1
sys.settrace(tracer)
print(check())
