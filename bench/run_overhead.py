"""evalkit's vLLM path vs raw ``vllm.LLM.generate`` on the same GSM8K prompts, in one run.

Both use ONE engine instance (so start-up is not part of the ratio), prefix caching off (so
neither benefits from the other having warmed the cache), and alternate A/B/A/B. evalkit's
time covers everything `evalkit run` does after the engine is up: building and hashing
prompts, streaming generation, scoring, writing samples.jsonl and metrics.json.

    EVALKIT_DATA_DIR=../shared/data .venv/bin/python bench/run_overhead.py --n 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from vllm import LLM, SamplingParams

    from evalkit.checkpoints import resolve
    from evalkit.models.vllm import VLLMBackend, stored_dtype
    from evalkit.run.runner import RunOptions, run_task
    from evalkit.tasks import load_task

    ckpt = resolve(args.model)
    task = load_task("gsm8k")
    prompts = [task.prompt(d) for d in task.docs(args.n)]
    g = task.generation
    llm = LLM(str(ckpt.path), dtype=stored_dtype(ckpt), seed=1234, enable_prefix_caching=False)
    backend = VLLMBackend(name="vllm", version="bench", llm=llm, lora_ids={})
    params = SamplingParams(temperature=0, max_tokens=g.max_tokens, stop=list(g.until))

    def raw() -> float:
        t = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - t

    def evalkit() -> float:
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            run_task(ckpt, "gsm8k", RunOptions(limit=args.n, out_dir=Path(out), use_cache=False,
                                               progress=False), backend=backend)
            return time.perf_counter() - t

    raw(), evalkit()  # warm-up pass each: first-call kernel setup not in either figure
    times = {"raw": [], "evalkit": []}
    for _ in range(args.rounds):
        times["raw"].append(raw())
        times["evalkit"].append(evalkit())
    ratio = sum(times["evalkit"]) / sum(times["raw"])
    print(json.dumps({"prompts": args.n, "times_s": times, "ratio_evalkit_over_raw":
                      round(ratio, 4)}, indent=2))


if __name__ == "__main__":
    main()
