"""EvalPlus's test programs and the canonical solutions' outputs and times they compare with.

The data (HumanEval+ and MBPP+ release files, MBPP+ input conversions) is
``evalkit/tasks/evalplus.py``; the ``evalplus`` scorer (``evalkit/scoring/code.py``) runs the
programs built here. EvalPlus (0.3.1 is the reference here) stores only inputs. The expected
output of an input is what the canonical solution returns for it, and a solution's time limit per
input is ``max(min_time_limit, gt_time_limit_factor * canonical run time)`` with EvalPlus's
defaults 1.0 s and 4.0; the whole program gets ``min(60, sum of the limits) + 2`` seconds
(EvalPlus's process timeout with ``fast_check``). Times are CPU seconds here, wall-clock seconds
in EvalPlus (see ``evalplus_harness.py``); the sandbox's wall limit is a backstop at
``WALL_FACTOR`` times that.

evalkit runs the canonical solutions in the sandbox once per item and keeps outputs and times on
disk, keyed by the dataset file's hash (``<cache>/evalplus/<sha256[:16]>-<version>/<task>.json``).
The host never unmarshals those outputs: they go back into the sandbox as they came out.

A sample passes the plus variant when it passes its base inputs and its plus inputs, each run as
one program (EvalPlus's "base + extra tests"); ``passed_base`` is the base inputs alone.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.atomic import write_text_atomic
from evalkit.errors import EvalkitError
from evalkit.paths import cache_dir
from evalkit.scoring.evalplus_harness import WALL_FACTOR
from evalkit.tasks.evalplus import _MBPP_RULE, PHASES, marshal_b64, mbpp_deserialize

if TYPE_CHECKING:
    from evalkit.sandbox import Limits

HARNESS_FILE = Path(__file__).with_name("evalplus_harness.py")
# EvalPlus 0.3.1 defaults (evalplus/config.py, evalplus/eval/__init__.py).
MIN_TIME_LIMIT = 1.0
GT_TIME_LIMIT_FACTOR = 4.0
TIMEOUT_PER_TASK = 60.0
MEMORY_MB = 4096  # EVALPLUS_MAX_MEMORY_BYTES' default
# The canonical run of one phase of one item, all inputs (EvalPlus has no limit on its own).
REFERENCE_TIMEOUT_S = 600.0
REFERENCE_MEMORY_MB = 8192
# Expected outputs shipped into each test program, per output and per item and phase (marshal
# bytes); larger ones (HumanEval/15's strings, Mbpp/255's 1.7 GB of tuples...) are recomputed
# inside the test instead, by the canonical solution, one at a time.
MAX_SHIPPED_OUTPUT = 1 << 20
MAX_SHIPPED_TOTAL = 4 << 20
REFERENCE_OUTPUT_BYTES = 2 * MAX_SHIPPED_TOTAL + (1 << 20)


# ---------------------------------------------------------------------------- programs


@cache
def harness() -> tuple[str, str]:
    """The in-sandbox harness's source and a short hash of it."""
    source = HARNESS_FILE.read_text()
    return source, hashlib.sha256(source.encode()).hexdigest()[:12]


def _program(call: str, constants: dict[str, str]) -> tuple[str, str]:
    """(program to run, the same with the harness and the data left out, for samples.jsonl)."""
    source, digest = harness()
    lines = [f"{name} = {value!r}" for name, value in constants.items()]
    shown = [f"{name} = {value!r}" if len(value) < 2000 else
             f"{name} = ...  # {len(value):,} characters of base64 marshal data"
             for name, value in constants.items()]
    head = f"# evalkit/scoring/evalplus_harness.py (sha256 {digest}...) goes here\n"
    return (source + "\n" + "\n".join(lines) + "\n" + call + "\n",
            head + "\n".join(shown) + "\n" + call + "\n")


def canonical_solution(doc: dict) -> str:
    return doc["prompt"] + doc["canonical_solution"]  # what EvalPlus runs for the truth


def reference_program(doc: dict, phase: str) -> str:
    """The canonical solution over one phase's inputs; prints run times and outputs."""
    program, _ = _program(
        f"reference(SOLUTION, {doc['entry_point']!r}, INPUTS, {doc['dataset']!r}, "
        f"{MAX_SHIPPED_OUTPUT}, {MAX_SHIPPED_TOTAL})",
        {"SOLUTION": canonical_solution(doc), "INPUTS": doc[f"{phase}_inputs_b64"]})
    return program


def check_program(doc: dict, solution: str, phase: str, ref: Reference,
                  min_time_limit: float = MIN_TIME_LIMIT,
                  factor: float = GT_TIME_LIMIT_FACTOR) -> tuple[str, str, Limits]:
    """(program, its copy for samples.jsonl, its sandbox limits) testing ``solution`` on one
    phase's inputs against the canonical outputs ``ref``."""
    from evalkit.sandbox import Limits

    limits = time_limits(ref.times, min_time_limit, factor)
    constants = {"SOLUTION": solution, "INPUTS": doc[f"{phase}_inputs_b64"],
                 "EXPECTED": ref.expected_b64, "LIMITS": marshal_b64(limits)}
    recompute = ""
    if ref.recompute:
        constants["CANONICAL"] = canonical_solution(doc)
        recompute = f", canonical=CANONICAL, recompute={list(ref.recompute)!r}"
    program, shown = _program(
        f"check({doc['dataset']!r}, {doc['entry_point']!r}, SOLUTION, INPUTS, EXPECTED, "
        f"LIMITS, {doc['atol']!r}, {phase!r}{recompute})", constants)
    # Recomputed outputs get the time their inputs give the solution.
    cpu = program_timeout(limits) + sum(limits[i] for i in ref.recompute)
    return program, shown, Limits(cpu_s=cpu, timeout_s=WALL_FACTOR * cpu + 10,
                                  memory_mb=MEMORY_MB)


def time_limits(times: tuple[float, ...] | list[float], min_time_limit: float = MIN_TIME_LIMIT,
                factor: float = GT_TIME_LIMIT_FACTOR) -> list[float]:
    """Seconds allowed per input: the canonical run time scaled, with a floor (EvalPlus)."""
    return [max(min_time_limit, factor * t) for t in times]


def program_timeout(limits: list[float]) -> float:
    """The whole program's limit: EvalPlus's per-task timeout with ``fast_check``
    (``min(60, sum) + 1``, and the process is joined for one second more)."""
    return min(TIMEOUT_PER_TASK, sum(limits)) + 2.0


# ---------------------------------------------------------------------------- expected outputs


@dataclass(frozen=True)
class Reference:
    expected_b64: str  # base64 marshal of the canonical outputs (opaque to the host)
    times: tuple[float, ...]  # the canonical solution's seconds per input
    recompute: tuple[int, ...] = ()  # inputs whose output is not shipped (None in the list)


class References:
    """Canonical outputs and times per item and phase: memory, then disk, then the sandbox.

    Thread-safe: the runner scores from a pool; one thread computes an item, the others wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item_locks: dict[tuple[str, str], threading.Lock] = {}
        self._memo: dict[tuple[str, str], dict[str, Reference]] = {}

    def get(self, doc: dict, sandbox) -> dict[str, Reference]:
        key = (doc["dataset_sha256"], doc["task_id"])
        with self._lock:
            item_lock = self._item_locks.setdefault(key, threading.Lock())
        with item_lock:
            if key not in self._memo:
                path = cache_path(doc)
                refs = _read(path)
                if refs is None:
                    refs = _compute(doc, sandbox)
                    _write(path, doc["task_id"], refs)
                self._memo[key] = refs
            return self._memo[key]


def cache_path(doc: dict) -> Path:
    name = str(doc["task_id"]).replace("/", "_")
    return (cache_dir() / "evalplus" / f"{doc['dataset_sha256'][:16]}-{_reference_version()}"
            / f"{name}.json")


@cache
def _reference_version() -> str:
    """Changes with whatever shapes the cached outputs: the canonical run's code, the input
    conversions and the shipping limits (not with the rest of the harness)."""
    import inspect

    from evalkit.scoring import evalplus_harness as h

    parts = [inspect.getsource(h.reference), inspect.getsource(h._canonical_output),
             inspect.getsource(mbpp_deserialize),
             repr(sorted(_MBPP_RULE.items())), str((MAX_SHIPPED_OUTPUT, MAX_SHIPPED_TOTAL))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _read(path: Path) -> dict[str, Reference] | None:
    try:
        data = json.loads(path.read_text())
        return {p: Reference(data[p]["expected_b64"], tuple(data[p]["times"]),
                             tuple(data[p]["recompute"])) for p in PHASES}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: computed again


def _write(path: Path, task_id: str, refs: dict[str, Reference]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"task_id": task_id, **{p: {"times": list(r.times), "recompute": list(r.recompute),
                                       "expected_b64": r.expected_b64}
                                   for p, r in refs.items()}}
    write_text_atomic(path, json.dumps(data))  # a concurrent reader sees all of it or nothing


def _compute(doc: dict, sandbox) -> dict[str, Reference]:
    from evalkit.sandbox import Limits

    limits = Limits(timeout_s=REFERENCE_TIMEOUT_S, cpu_s=REFERENCE_TIMEOUT_S,
                    memory_mb=REFERENCE_MEMORY_MB, output_bytes=REFERENCE_OUTPUT_BYTES)
    results = sandbox.run_many([(reference_program(doc, p), limits) for p in PHASES])
    refs = {}
    for phase, result in zip(PHASES, results, strict=True):
        if result.status != "passed":
            kind = "sandbox error" if result.status == "sandbox_error" else result.status
            raise EvalkitError(f"{doc['task_id']}: the canonical solution did not run through "
                               f"its {phase} inputs ({kind}: {result.detail})")
        head, _, blob = result.stdout.partition("\n")
        facts = json.loads(head)
        times = facts["times"]
        if len(times) != doc[f"n_{phase}"]:
            raise EvalkitError(f"{doc['task_id']}: the canonical run reported {len(times)} "
                               f"times for {doc[f'n_{phase}']} {phase} inputs")
        refs[phase] = Reference(blob.strip(), tuple(float(t) for t in times),
                                tuple(int(i) for i in facts["recompute"]))
    return refs
