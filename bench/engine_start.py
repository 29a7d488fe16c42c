"""evalkit's vLLM engine start vs raw ``vllm.LLM(...)`` with the same options, in one run.

Each start is a fresh Python process (a cold import of vLLM and a cold engine, as a new `evalkit
run` has), timed from the child's first line (before any import) to the engine being ready.
evalkit's start is ``VLLMBackend.start`` as `evalkit run` makes it: option checks, the engine log
redirect with its spinner, the watchdog process. The raw start is ``vllm.LLM(**options)`` with
exactly the options evalkit passed (read back from the evalkit start of the same round), in
evalkit's process as evalkit runs it on CPU, and once more with vLLM's default engine-core and
worker processes (what running in process saves). Each round another side goes first.

    EVALKIT_CACHE_DIR=/tmp/c .venv/bin/python bench/engine_start.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = {
    "evalkit": """
import json, sys, time
t = time.perf_counter()  # from before any import, as the raw side (evalkit's imports count)
from evalkit.checkpoints import resolve
from evalkit.models.engine_log import log_into
from evalkit.models.vllm import VLLMBackend
ckpt = resolve(sys.argv[1])
t0 = time.perf_counter() - t
with log_into(__import__("pathlib").Path(sys.argv[2])):  # as `evalkit run` (not --verbose)
    backend = VLLMBackend.start(ckpt, seed=1234)
    seconds = time.perf_counter() - t
options = dict(backend.options, model=str(ckpt.path))
backend.close()
print(json.dumps({"seconds": seconds, "resolve_s": t0, "options": options}), file=sys.__stdout__)
""",
    "raw": """
import json, sys, time
options = json.loads(sys.argv[1])
t = time.perf_counter()
from vllm import LLM
llm = LLM(**options)
seconds = time.perf_counter() - t
llm.llm_engine.engine_core.shutdown()
print(json.dumps({"seconds": seconds}))
""",
}


def start(side: str, *args: str, env: dict | None = None) -> dict:
    # evalkit's child writes its result to the real stdout; vLLM's chatter goes to /dev/null
    # for the raw side (evalkit's own goes to its engine log).
    done = subprocess.run([sys.executable, "-c", CHILD[side], *args], capture_output=True,
                          text=True, check=False, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"{side} start failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# The raw engine as evalkit runs it, and the same options with vLLM's default placement (an
# engine-core and a worker process): what evalkit's in-process CPU engine saves.
RAW = {"raw": "0", "raw, engine processes": "1"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    sides = ["evalkit", *RAW]
    times: dict[str, list[float]] = {side: [] for side in sides}
    options: dict = {}
    with tempfile.TemporaryDirectory() as logs:
        for r in range(args.rounds):
            # the raw sides need evalkit's options: evalkit goes first once, then each side
            # takes its turn first
            order = sides[r % 3:] + sides[:r % 3] if options else sides
            for side in order:
                if side == "evalkit":
                    got = start("evalkit", args.model, logs)
                    options = got["options"]
                else:
                    raw = {k: v for k, v in options.items() if k != "engine_processes"}
                    got = start("raw", json.dumps(raw),
                                env={"VLLM_ENABLE_V1_MULTIPROCESSING": RAW[side]})
                times[side].append(round(got["seconds"], 2))
                print(f"round {r + 1} {side}: {got['seconds']:.1f} s", file=sys.stderr)
    raw = sum(times["raw"])
    print(json.dumps({"model": args.model, "options": options, "times_s": times,
                      "ratio_evalkit_over_raw": round(sum(times["evalkit"]) / raw, 3),
                      "ratio_raw_over_engine_processes":
                          round(raw / sum(times["raw, engine processes"]), 3)}, indent=1))


if __name__ == "__main__":
    main()
