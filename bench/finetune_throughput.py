"""`evalkit finetune` vs TRL's `SFTTrainer`: training tokens per second on the same work.

    .venv/bin/python bench/finetune_throughput.py [--examples 64] [--methods lora,full]
        [--rounds 1] [--trl-grouped] [--json results.json]

Same model (the embedded SmolLM2-135M-Instruct, fp32), same data (the first N GSM8K train
examples that fit in --max-len tokens, as prompt/completion: ``Question: ...\\nAnswer:`` →
`` <rationale> #### N`` + EOS, loss on completion tokens only), same sequence limit, batch size,
epochs, optimizer (fused AdamW), schedule and method (full, or LoRA r16/α32 on every linear layer
but the head). TRL runs with its defaults otherwise (right padding to the longest sequence of
each batch, random batches); ``--trl-grouped`` adds a TRL run with
``train_sampling_strategy="group_by_length"`` (its length-grouped sampler).

tokens/s = real (non-padding) tokens trained on / seconds of the training loop, as each tool
times it: TRL's ``train_runtime``, evalkit's summed step time (both exclude model loading and
saving). Every job runs in a fresh subprocess; jobs take turns within a round so background load
hits all of them alike; the table shows the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"}
LR = {"full": 1e-5, "lora": 2e-4}


def write_data(path: Path, model: str, n: int, max_len: int) -> Path:
    """The first ``n`` GSM8K train examples whose tokens fit ``max_len``, as a JSONL file."""
    from transformers import AutoTokenizer

    from evalkit.checkpoints import resolve
    from evalkit.finetune.data import load_examples, tokenize

    tokenizer = AutoTokenizer.from_pretrained(resolve(model).path)
    rows = []
    for example in load_examples("gsm8k:train"):
        if len(tokenize(example, tokenizer).input_ids) <= max_len:
            rows.append({"prompt": example.prompt, "completion": example.completion})
        if len(rows) == n:
            break
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------ children


def run_evalkit(args: argparse.Namespace) -> dict:
    from evalkit.finetune import FinetuneConfig, Manifest, finetune

    with tempfile.TemporaryDirectory() as tmp:
        out = finetune(FinetuneConfig(
            base=args.model, data=str(args.data), out=Path(tmp) / "out", method=args.method,
            rank=LORA["r"], alpha=LORA["lora_alpha"], epochs=args.epochs, lr=LR[args.method],
            batch_size=args.batch_size, max_len=args.max_len, seed=0, save_every=10**9,
        ))
        m = Manifest.model_validate_json((out / "evalkit_finetune.json").read_text())
    return {"tokens": m.data.tokens * args.epochs, "seconds": m.wall_time_s, "steps": m.steps,
            "final_loss": m.final_loss}


def run_trl(args: argparse.Namespace, grouped: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from evalkit.checkpoints import resolve

    path = resolve(args.model).path
    rows = [json.loads(line) for line in args.data.read_text().splitlines()]
    steps = math.ceil(len(rows) / args.batch_size) * args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(
            output_dir=tmp, per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1, num_train_epochs=args.epochs,
            learning_rate=LR[args.method], lr_scheduler_type="cosine",
            warmup_steps=math.ceil(0.05 * steps), max_length=args.max_len,
            completion_only_loss=True, save_strategy="no", report_to="none",
            logging_steps=10**9, seed=0, use_cpu=True, bf16=False, disable_tqdm=True,
            train_sampling_strategy="group_by_length" if grouped else "random",
        )
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
            args=config, train_dataset=Dataset.from_list(rows),
            processing_class=AutoTokenizer.from_pretrained(path),
            peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA) if args.method == "lora"
            else None,
        )
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * args.epochs
        result = trainer.train()
    return {"tokens": tokens, "seconds": result.metrics["train_runtime"],
            "steps": result.global_step, "final_loss": result.training_loss}


def child(args: argparse.Namespace) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    if args.child == "evalkit":
        result = run_evalkit(args)
    else:
        result = run_trl(args, grouped=args.child == "trl-grouped")
    result["process_seconds"] = time.perf_counter() - started
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------------ parent


def run_job(args: argparse.Namespace, tool: str, method: str) -> dict:
    cmd = [sys.executable, __file__, "--child", tool, "--method", method, "--data",
           str(args.data), "--model", args.model, "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--max-len", str(args.max_len)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{tool} {method} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(line.removeprefix("RESULT "))
    result["tokens_per_second"] = result["tokens"] / result["seconds"]
    print(f"  {tool:12s} {method:5s} {result['tokens_per_second']:7.1f} tok/s  "
          f"({result['tokens']} tokens in {result['seconds']:.1f} s, {result['steps']} steps, "
          f"loss {result['final_loss']:.3f})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--trl-grouped", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child")
    parser.add_argument("--method")
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    tools = ["evalkit", "trl"] + (["trl-grouped"] if args.trl_grouped else [])
    results: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        args.data = write_data(Path(tmp) / "gsm8k.jsonl", args.model, args.examples, args.max_len)
        print(f"{args.examples} GSM8K train examples ≤ {args.max_len} tokens, batch "
              f"{args.batch_size}, {args.epochs} epoch(s), fp32, {args.model}")
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}")
            for method in args.methods.split(","):
                for tool in tools:
                    results.setdefault(method, {}).setdefault(tool, []).append(
                        run_job(args, tool, method))

    print("\nmethod  tool          tok/s (median)  evalkit / tool")
    summary = {}
    for method, by_tool in results.items():
        ours = statistics.median(r["tokens_per_second"] for r in by_tool["evalkit"])
        for tool, runs in by_tool.items():
            speed = statistics.median(r["tokens_per_second"] for r in runs)
            summary[f"{method}/{tool}"] = {"tokens_per_second": speed, "ratio": ours / speed,
                                           "runs": runs}
            print(f"{method:7s} {tool:13s} {speed:14.1f}  {ours / speed:14.2f}")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"data": "gsm8k:train",
                                                                   "json": str(args.json)},
                                         "results": summary}, indent=2, default=str))


if __name__ == "__main__":
    main()
