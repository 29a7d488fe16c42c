"""Limits and results: the parts that need no sandbox."""

from __future__ import annotations

import json

import pytest

from evalkit.sandbox import STATUSES, Limits, SandboxResult
from evalkit.sandbox.result import classify


def test_default_limits_are_the_ones_that_held_against_the_hostile_suite():
    limits = Limits()
    assert (limits.timeout_s, limits.cpu_s, limits.memory_mb, limits.processes,
            limits.file_size_mb, limits.open_files, limits.output_bytes) == (
        10.0, 5.0, 1024, 8, 16, 64, 1 << 20)


@pytest.mark.parametrize("field", ["timeout_s", "cpu_s", "memory_mb", "processes",
                                   "file_size_mb", "open_files", "output_bytes"])
@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True])
def test_limits_refuse_nonsense(field, bad):
    with pytest.raises(ValueError, match=field):
        Limits(**{field: bad})


def test_result_round_trips_through_json():
    result = SandboxResult("passed", 0, "out", "err", 0.5, 0.25, "ran to the end")
    assert json.loads(json.dumps(result.to_dict())) == {
        "status": "passed", "exit_code": 0, "stdout": "out", "stderr": "err", "wall_s": 0.5,
        "cpu_s": 0.25, "detail": "ran to the end", "evidence": []}
    assert result.passed and result.status in STATUSES


def _raw(**overrides):
    raw = {"exit_code": 0, "wall_s": 0.1, "cpu_s": 0.05, "maxrss_kb": 9000, "stdout": "",
           "stderr": "", "timed_out": False, "output_exceeded": False, "status": "completed",
           "leftover_pids": []}
    return {**raw, **overrides}


def test_processes_surviving_the_cleanup_make_a_sandbox_error_not_a_score():
    # The runner's own cleanup check; no hostile program here gets past it, so this is the one
    # path the real-sandbox tests cannot reach.
    result = classify(_raw(leftover_pids=[7, 9]), Limits())
    assert result.status == "sandbox_error"
    assert result.exit_code is None
    assert "[7, 9]" in result.detail
