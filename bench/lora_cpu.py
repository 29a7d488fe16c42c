"""The tuned side of a LoRA compare on vLLM-CPU vs the base side, on the same items, in one run.

Three engines one after the other, each generating greedily for the same GSM8K prompts:
the base model; the adapter as evalkit serves it on CPU (merged into a cached full copy); and
the adapter through vLLM's native LoRA path (what evalkit did before, 3.5x the base in issue
16). The adapter is a peft LoRA (r=16, every linear layer) with peft's default init (B = 0):
its outputs equal the base's token for token, so all three generate the same number of tokens
and the times compare the same work (LoRA kernels cost the same whatever the weights). Times
are generation only (engine start reported apart; the merge is timed on its first, uncached
use).

    EVALKIT_CACHE_DIR=/tmp/c EVALKIT_DATA_DIR=../shared/data .venv/bin/python bench/lora_cpu.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def make_adapter(base_path: Path, dest: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")
    get_peft_model(model, config).save_pretrained(dest)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from evalkit.checkpoints import resolve
    from evalkit.models import GenRequest
    from evalkit.models.engine_log import log_into
    from evalkit.models.merged_lora import merged_copy
    from evalkit.models.vllm import VLLMBackend
    from evalkit.tasks import load_task

    base = resolve(args.model)
    task = load_task("gsm8k")
    prompts = [task.prompt(d) for d in task.docs(args.n)]
    result: dict = {"model": args.model, "items": args.n, "max_tokens": args.max_tokens}
    with tempfile.TemporaryDirectory() as tmp, log_into(Path(tmp)):  # as `evalkit run` does
        adapter = resolve(str(make_adapter(base.path, Path(tmp) / "lora")))
        t = time.perf_counter()
        merged_copy(adapter)
        result["merge_s"] = round(time.perf_counter() - t, 2)
        sides = {"base": (base, (), None, None), "merged": (base, (adapter,), "merged", adapter),
                 "native": (base, (adapter,), "native", adapter)}
        texts = {}
        for side, (ckpt, adapters, lora, req_adapter) in sides.items():
            t = time.perf_counter()
            backend = VLLMBackend.start(ckpt, adapters, seed=1234, lora=lora)
            started = time.perf_counter() - t
            requests = [GenRequest(prompt=p, max_tokens=args.max_tokens, stop=tuple(
                task.generation.until), adapter=req_adapter) for p in prompts]
            t = time.perf_counter()
            out = dict(backend.generate(requests))
            generated = time.perf_counter() - t
            backend.close()
            texts[side] = [out[i][0].text for i in range(len(prompts))]
            tokens = sum(out[i][0].n_completion_tokens for i in range(len(prompts)))
            result[side] = {"start_s": round(started, 2), "generate_s": round(generated, 2),
                            "tokens": tokens, "options_lora": backend.options.get("lora")}
            print(f"{side}: start {started:.1f} s, generate {generated:.1f} s ({tokens} tokens)",
                  file=sys.stderr)
    result["same_outputs"] = texts["base"] == texts["merged"] == texts["native"]
    for side in ("merged", "native"):
        result[f"ratio_{side}_over_base"] = round(
            result[side]["generate_s"] / result["base"]["generate_s"], 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
