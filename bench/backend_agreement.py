"""HF (transformers) vs vLLM greedy agreement on GSM8K, through `evalkit run` itself.

    EVALKIT_DATA_DIR=../shared/data .venv/bin/python bench/backend_agreement.py --n 200

Prints the share of items whose completions are byte-identical, and both backends' scores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()

    from evalkit.checkpoints import resolve
    from evalkit.run.format import load_run
    from evalkit.run.runner import RunOptions, run_task

    ckpt = resolve(args.model)
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for backend in ("vllm", "hf"):
            folder = run_task(ckpt, args.task, RunOptions(backend=backend, limit=args.n,
                                                          out_dir=Path(out), use_cache=False))
            run, samples, metrics = load_run(folder).dicts()
            results[backend] = {
                "completions": {s["doc_id"]: s["completion"] for s in samples},
                "metrics": {k: v["value"] for k, v in metrics["metrics"].items()},
                "generation_s": run["timings"]["generation_s"],
            }
    v, h = results["vllm"]["completions"], results["hf"]["completions"]
    same = sum(v[k] == h[k] for k in v)
    print(json.dumps({"items": len(v), "identical": same, "agreement": round(same / len(v), 4),
                      **{b: {"metrics": r["metrics"], "generation_s": r["generation_s"]}
                         for b, r in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
