"""LoRA vs full fine-tuning of the embedded model, seen by `evalkit analyze` (intruder paper).

    .venv/bin/python bench/analyze_lora_vs_full.py [--steps 150] [--out DIR]

Stand-in until `evalkit finetune` exists: both fine-tunes are made here with plain
transformers + peft on GSM8K train (question + worked answer, causal-LM loss on the whole
text), same data order, same number of steps. Then both are analysed against the base with
the default settings (k = 10, ε = 0.5, every block matrix) and the headline numbers printed:
intruders summed over the model, the count-vs-ε curve, effective rank of ΔW, relative update.
The paper's qualitative result: intruders for low-rank LoRA, few or none for full fine-tuning,
and a much lower effective rank of ΔW for LoRA.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def batches(tokenizer, data_file: Path, steps: int, batch: int, seq: int, seed: int = 0):
    rows = [json.loads(line) for line in data_file.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}{tokenizer.eos_token}"
             for r in rows]
    for step in range(steps):
        chunk = [texts[(step * batch + i) % len(texts)] for i in range(batch)]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                        max_length=seq)
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        yield {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
               "labels": labels}


def train(model, params, tokenizer, args, lr: float, label: str) -> list[float]:
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    t0 = time.perf_counter()
    for step, b in enumerate(batches(tokenizer, args.data, args.steps, args.batch, args.seq)):
        loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if step % 10 == 0 or step == args.steps - 1:
            print(f"[{label}] step {step + 1}/{args.steps} loss {loss:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()
    return losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="builtin:smollm2-135m")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/gsm8k/train.jsonl")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr-full", type=float, default=2e-5)
    p.add_argument("--lr-lora", type=float, default=5e-4)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--skip-train", action="store_true", help="analyse existing outputs only")
    args = p.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalkit.checkpoints import resolve
    from evalkit.paths import cache_dir

    base = resolve(args.base)
    out = args.out or cache_dir() / "bench" / "lora-vs-full"
    full_dir, lora_dir = out / "full", out / f"lora-r{args.r}"
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}

    if not args.skip_train:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
        losses = train(model, [q for q in model.parameters() if q.requires_grad], tokenizer,
                       args, args.lr_full, "full")
        model.save_pretrained(full_dir)
        tokenizer.save_pretrained(full_dir)
        (full_dir / "bench_recipe.json").write_text(json.dumps(
            {**recipe, "method": "full", "loss_first": losses[0], "loss_last": losses[-1]}))
        del model

        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(
            r=args.r, lora_alpha=args.alpha, lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"]))
        losses = train(model, [q for q in model.parameters() if q.requires_grad], tokenizer,
                       args, args.lr_lora, f"lora r={args.r}")
        model.save_pretrained(lora_dir)
        # evalkit resolves an adapter's base from this manifest (the builtin spec, not a path)
        (lora_dir / "evalkit_finetune.json").write_text(json.dumps(
            {"base": {"spec": args.base}, "method": "lora", **recipe}))
        (lora_dir / "bench_recipe.json").write_text(json.dumps(
            {**recipe, "method": "lora", "loss_first": losses[0], "loss_last": losses[-1]}))
        del model

    from evalkit.analysis import report
    from evalkit.analysis.weightspace import Options, analyze_weights

    rows = {}
    for label, folder in (("full", full_dir), (f"lora r={args.r}", lora_dir)):
        tuned = resolve(str(folder))
        analysis = analyze_weights(base, tuned, Options(progress=False))
        summary = report.write(analysis, out / f"analysis-{folder.name}")
        rec = json.loads((folder / "bench_recipe.json").read_text())
        rows[label] = {
            "intruders_total": summary.intruders_total,
            "matrices_with_intruders": summary.matrices_with_intruders,
            "intruder_curve": summary.intruder_curve,
            "effective_rank_mean": summary.effective_rank_mean,
            "effective_rank_median": summary.effective_rank_median,
            "stable_rank_mean": summary.stable_rank_mean,
            "rel_update": summary.rel_update,
            "subspace_sim_mean": summary.subspace_sim_mean,
            "loss": [rec["loss_first"], rec["loss_last"]],
            "seconds": summary.seconds,
        }
    print(json.dumps(rows, indent=2))
    (out / "lora_vs_full.json").write_text(json.dumps({"recipe": recipe, "results": rows},
                                                      indent=2))


if __name__ == "__main__":
    main()
