"""evalkit's vLLM engine start vs raw ``vllm.LLM(...)`` with the same options, in one run.

Each start is a fresh Python process (a cold import of vLLM and a cold engine, as a new
`evalkit run` has), timed from before vLLM is imported to the engine being ready. evalkit's
start is ``VLLMBackend.start`` as `evalkit run` makes it: option checks, the engine log
redirect with its spinner, the watchdog process. The raw start is ``vllm.LLM(**options)`` with
exactly the options evalkit passed (read back from the evalkit start of the same round).
Rounds run evalkit/raw then raw/evalkit (ABBA), so neither side always goes first.

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
t = time.perf_counter()
from evalkit.checkpoints import resolve
from evalkit.models.engine_log import log_into
from evalkit.models.vllm import VLLMBackend
ckpt = resolve(sys.argv[1])
t0 = time.perf_counter() - t
with log_into(__import__("pathlib").Path(sys.argv[2])):  # as `evalkit run` (not --verbose)
    t = time.perf_counter()
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


def start(side: str, *args: str) -> dict:
    # evalkit's child writes its result to the real stdout; vLLM's chatter goes to /dev/null
    # for the raw side (evalkit's own goes to its engine log).
    done = subprocess.run([sys.executable, "-c", CHILD[side], *args], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} start failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    times: dict[str, list[float]] = {"evalkit": [], "raw": []}
    options: dict = {}
    with tempfile.TemporaryDirectory() as logs:
        for r in range(args.rounds):
            order = ["evalkit", "raw"] if r % 2 == 0 else ["raw", "evalkit"]
            if not options:  # the raw side needs evalkit's options: evalkit goes first once
                order = ["evalkit", "raw"]
            for side in order:
                if side == "evalkit":
                    got = start("evalkit", args.model, logs)
                    options = got["options"]
                else:
                    got = start("raw", json.dumps(options))
                times[side].append(round(got["seconds"], 2))
                print(f"round {r + 1} {side}: {got['seconds']:.1f} s", file=sys.stderr)
    ratio = sum(times["evalkit"]) / sum(times["raw"])
    print(json.dumps({"model": args.model, "options": options, "times_s": times,
                      "ratio_evalkit_over_raw": round(ratio, 3)}, indent=1))


if __name__ == "__main__":
    main()
