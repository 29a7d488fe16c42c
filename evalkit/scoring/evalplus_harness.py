"""The part of an EvalPlus-style test that runs inside the sandbox (standard library only).

Programs are this file's source followed by one call (``reference`` or ``check``, see
``evalkit/scoring/evalplus.py``). It reproduces how EvalPlus 0.3.1 tests a solution
(``evalplus/eval/__init__.py``): the solution is exec'd in a fresh namespace with its output
swallowed, then called on each input under a per-input time limit, and each output is compared
with the canonical solution's: exact equality, then EvalPlus's task-specific oracles, then
``np.allclose`` (re-implemented here: no numpy in the sandbox) with the item's ``atol`` (1e-6
once a float is expected). The first failing input ends the program with exit code 1 and one
line saying which input failed and how (EvalPlus's default ``fast_check``).

One deliberate difference: times are CPU seconds of the process (``time.process_time`` for the
canonical run, ``ITIMER_PROF`` for the limit), where EvalPlus uses the wall clock, so that a busy
machine neither fails correct solutions nor changes a result between two runs. A wall-clock
limit of ``WALL_FACTOR`` times the CPU limit still catches solutions that sleep or block.

Inputs and expected outputs travel as base64 marshal data: marshal keeps tuples, sets, complex
numbers and infinities apart exactly, and the host never unmarshals what a sandbox produced.
It must run on any Python from 3.9 on (a container's python3), hence no ``zip(strict=)``.
"""
# ruff: noqa: B905

import binascii
import cmath
import contextlib
import copy
import io
import json
import marshal
import math
import signal
import sys
import time

# EvalPlus's special oracles, by entry point (``evalplus/eval/_special_oracle.py``).
MBPP_SET_EQUAL = ("similar_elements", "find_char_long", "common_in_nested_lists",
                  "extract_singly", "larg_nnum", "intersection_array", "find_dissimilar", "Diff")
MBPP_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")
DEFAULT_FLOAT_ATOL = 1e-6
WALL_FACTOR = 3
RTOL = 1e-7  # np.testing.assert_allclose's, which EvalPlus passes to np.allclose


class _Sink(io.TextIOBase):
    """Where a solution's prints go; reading from it fails, as EvalPlus's stdin does."""

    def writable(self):
        return True

    def write(self, text):
        return len(text)

    def readable(self):
        return False

    def read(self, *args):
        raise OSError("stdin is not available to the solution")

    readline = read


@contextlib.contextmanager
def swallow_io():
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = sys.stdout = sys.stderr = _Sink()
    try:
        yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


class InputTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise InputTimeout()


@contextlib.contextmanager
def time_limit(cpu_seconds):
    signal.signal(signal.SIGPROF, _alarm)
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
    signal.setitimer(signal.ITIMER_REAL, WALL_FACTOR * cpu_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)


def decode(blob):
    return marshal.loads(binascii.a2b_base64(blob))


class MissingFunction(Exception):
    pass


def load_function(solution, entry_point):
    namespace = {}
    with swallow_io():
        exec(compile(solution, "solution.py", "exec"), namespace)
    if entry_point not in namespace:
        raise MissingFunction(entry_point)
    return namespace[entry_point]


# ---------------------------------------------------------------- comparison


def is_floats(x):
    """A float, or a non-empty list/tuple of floats only (bools and ints are not floats)."""
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(v, float) for v in x)
    return False


def _close(x, y, rtol, atol):
    # np.isclose: |x - y| <= atol + rtol * |y|; infinities only match themselves; NaN nothing.
    if not isinstance(x, (int, float, complex)) or not isinstance(y, (int, float, complex)):
        raise TypeError("not a number")
    x = x if isinstance(x, complex) else float(x)
    y = y if isinstance(y, complex) else float(y)
    if not (cmath.isfinite(x) and cmath.isfinite(y)):
        return x == y
    return abs(x - y) <= atol + rtol * abs(y)


def _as_array(x):
    """(shape, flat values) of a number or a regular nested list/tuple, as np.asarray sees
    it; ragged nesting raises, as it does in numpy."""
    if not isinstance(x, (list, tuple)):
        return (), [x]
    parts = [_as_array(v) for v in x]
    if len({shape for shape, _ in parts}) > 1:
        raise ValueError("ragged sequence")
    inner = parts[0][0] if parts else ()
    return (len(x), *inner), [v for _, flat in parts for v in flat]


def _broadcast(a, b):
    """numpy's broadcast shape of two shapes (right-aligned, 1 stretches), else ValueError."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        raise ValueError("shapes do not broadcast")
    return a, b, tuple(y if x == 1 else x for x, y in zip(a, b))


def _flat_index(index, shape):
    flat = 0
    for i, dim in zip(index, shape):
        flat = flat * dim + (i if dim != 1 else 0)
    return flat


def allclose(a, b, rtol, atol):
    """np.allclose(a, b, rtol, atol) for numbers and (nested) lists/tuples of numbers."""
    (sa, fa), (sb, fb) = _as_array(a), _as_array(b)
    sa, sb, shape = _broadcast(sa, sb)
    indices = [()]
    for dim in shape:
        indices = [(*index, i) for index in indices for i in range(dim)]
    return all(_close(fa[_flat_index(index, sa)], fb[_flat_index(index, sb)], rtol, atol)
               for index in indices)


def poly(xs, x):
    return sum(coefficient * math.pow(x, i) for i, coefficient in enumerate(xs))


def _pyramid_surface(base_edge, height):
    # Mbpp/581's oracle: "height" is the pyramid's height, not its slant height.
    slant = math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 2 * base_edge * slant)


def _digit_distance(a, b):
    # Mbpp/558's oracle: the shorter number is padded with leading zeros.
    sa, sb = str(a), str(b)
    width = max(len(sa), len(sb))
    return sum(abs(int(x) - int(y)) for x, y in zip(sa.zfill(width), sb.zfill(width)))


def outputs_match(dataset, entry_point, inp, out, exp, atol):
    """(passed, atol for the next inputs): EvalPlus keeps the 1e-6 float default once set."""
    if dataset == "humaneval" and entry_point == "find_zero":
        # Any root will do: the polynomial must vanish at the answer. (EvalPlus 0.3.1 means
        # this but never records the pass, so there every find_zero sample fails.)
        return abs(poly(*inp, out)) <= atol, atol
    ok = out == exp
    if dataset == "mbpp":
        if entry_point == "are_equivalent":
            ok = True
        elif entry_point == "sum_div":
            ok = ok or out == 0
        elif entry_point == "surface_Area":
            ok = ok or abs(out - _pyramid_surface(*inp)) <= atol
        elif entry_point == "digit_distance_nums":
            ok = ok or out == _digit_distance(*inp)
        elif entry_point in MBPP_SET_EQUAL:
            ok = set(out) == set(exp)
        elif entry_point in MBPP_NOT_NONE:
            ok = out == exp if isinstance(out, bool) else exp == (out is not None)
    if atol == 0 and is_floats(exp):
        atol = DEFAULT_FLOAT_ATOL
    if ok or atol == 0:
        return bool(ok), atol
    if type(out) is not type(exp):
        return False, atol
    if isinstance(exp, (list, tuple)) and len(out) != len(exp):
        return False, atol
    return allclose(out, exp, RTOL, atol), atol


# ---------------------------------------------------------------- the two programs


def _short(value, limit=120):
    try:
        text = repr(value)
    except BaseException:
        text = f"<unprintable {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(exc, limit=100):
    try:
        text = str(exc)
    except BaseException:
        text = ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail(message):
    sys.stderr.write(message.replace("\n", " ") + "\n")
    sys.stderr.flush()
    raise SystemExit(1)


def check(dataset, entry_point, solution, inputs_blob, expected_blob, limits_blob, atol, phase,
          canonical=None, recompute=()):
    """Call the solution on every input; exit 1 on the first wrong, raising or slow one.

    ``recompute``: inputs whose expected output was too large to ship (or not marshallable):
    the canonical solution, loaded before the solution under test, computes each one just
    before the solution's turn, so that only one such output is held at a time.
    """
    inputs, expected, time_limits = decode(inputs_blob), decode(expected_blob), decode(limits_blob)
    oracle = load_function(canonical, entry_point) if recompute else None
    recompute = set(recompute)
    try:
        fn = load_function(solution, entry_point)
    except MissingFunction:
        _fail(f"the solution defines no {entry_point}")
    except BaseException as exc:
        _fail(f"the solution did not load: {_error(exc)}")
    total = len(inputs)
    for i, inp in enumerate(inputs):
        where = f"{phase} input {i + 1}/{total}"
        if i in recompute:
            with swallow_io():
                expected[i] = _canonical_output(oracle, copy.deepcopy(inp), dataset, entry_point)
        try:
            with time_limit(time_limits[i]), swallow_io():
                out = fn(*inp)
        except InputTimeout:
            _fail(f"{where}: no answer within {time_limits[i]:g} s of CPU time; "
                  f"input {_short(inp)}")
        except BaseException as exc:
            _fail(f"{where}: {_error(exc)}; input {_short(inp)}")
        exp = expected[i]
        try:
            ok, atol = outputs_match(dataset, entry_point, inp, out, exp, atol)
        except BaseException as exc:
            ok = False
            why = f" ({type(exc).__name__} comparing)"
        else:
            why = ""
        if not ok:
            _fail(f"{where}: expected {_short(exp)}, got {_short(out)}{why}; "
                  f"input {_short(inp)}")
        expected[i] = out = None  # a recomputed output can be large


def _canonical_output(fn, args, dataset, entry_point):
    out = fn(*args)
    if dataset == "mbpp" and entry_point in MBPP_NOT_NONE:
        return out is not None
    return out


def reference(solution, entry_point, inputs_blob, dataset, max_output, max_total):
    """Run the canonical solution on every input (a deep copy, as EvalPlus does) and print a
    JSON line (CPU seconds per input; inputs whose output is recomputed in each test because it
    is larger than ``max_output`` bytes, would take the total past ``max_total`` or does not
    marshal) and then the other outputs, base64 marshal."""
    real_stdout = sys.stdout
    inputs = decode(inputs_blob)
    fn = load_function(solution, entry_point)
    outputs, times, recompute, total = [], [], [], 0
    for i, inp in enumerate(inputs):
        args = copy.deepcopy(inp)
        with swallow_io():
            start = time.process_time()
            out = _canonical_output(fn, args, dataset, entry_point)
            times.append(time.process_time() - start)
        try:
            size = len(marshal.dumps(out))
        except ValueError:  # not a plain built-in value (a Counter, a re.Match...)
            size = None
        if size is None or size > max_output or total + size > max_total:
            recompute.append(i)
            out = None
        else:
            total += size
        outputs.append(out)
    blob = binascii.b2a_base64(marshal.dumps(outputs), newline=False).decode()
    real_stdout.write(json.dumps({"times": times, "recompute": recompute}) + "\n" + blob + "\n")
