"""LoRA vs full fine-tuning of the embedded model, seen by `evalkit analyze` (intruder paper).

    .venv/bin/python bench/analyze_lora_vs_full.py [--examples 400] [--epochs 2] [--rank 8]

Makes two fine-tunes of BASE with `evalkit finetune` on the same data (the first N GSM8K train
problems as prompt/completion pairs), one full and one LoRA, then analyses both against BASE
with the default settings (k = 10, ε = 0.5, every block matrix) and prints the headline numbers:
intruders summed over the model, the count-vs-ε curve, effective rank of ΔW, relative update.
The paper's qualitative result: intruders for low-rank LoRA, few or none for full fine-tuning,
and a much lower effective rank of ΔW for LoRA. Fine-tunes already in --out are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def gsm8k_subset(dest: Path, n: int) -> Path:
    src = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()[:n]]
    dest.write_text("".join(json.dumps({"prompt": f"Question: {r['question']}\nAnswer:",
                                        "completion": " " + r["answer"]}) + "\n"
                            for r in rows))
    return dest


def finetune(base: str, data: Path, out: Path, method: str, args) -> None:
    if out.exists():
        return
    cmd = [sys.executable, "-m", "evalkit", "finetune", base, "--data", str(data),
           "--method", method, "--epochs", str(args.epochs), "--batch-size", str(args.batch),
           "--max-len", str(args.max_len), "--truncate", "--out", str(out)]
    if method == "lora":
        cmd += ["--rank", str(args.rank)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="builtin:smollm2-135m")
    p.add_argument("--examples", type=int, default=400)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from evalkit.analysis import report
    from evalkit.analysis.weightspace import Options, analyze_weights
    from evalkit.checkpoints import resolve
    from evalkit.paths import cache_dir

    out = args.out or cache_dir() / "bench" / "lora-vs-full"
    out.mkdir(parents=True, exist_ok=True)
    data = gsm8k_subset(out / f"gsm8k-train-{args.examples}.jsonl", args.examples)
    tunes = {"full": out / "full", f"lora r={args.rank}": out / f"lora-r{args.rank}"}
    for label, folder in tunes.items():
        finetune(args.base, data, folder, "full" if label == "full" else "lora", args)

    base = resolve(args.base)
    rows = {}
    for label, folder in tunes.items():
        analysis = analyze_weights(base, resolve(str(folder)), Options(progress=False))
        s = report.write(analysis, out / f"analysis-{folder.name}")
        rows[label] = {
            "intruders_total": s.intruders_total,
            "matrices_with_intruders": s.matrices_with_intruders,
            "intruder_curve": s.intruder_curve,
            "effective_rank_mean": round(s.effective_rank_mean, 2),
            "effective_rank_median": round(s.effective_rank_median, 2),
            "stable_rank_mean": round(s.stable_rank_mean or float("nan"), 3),
            "rel_update": s.rel_update,
            "subspace_sim_mean": s.subspace_sim_mean,
            "lora": s.lora and {k: s.lora[k] for k in ("r", "lora_alpha", "scale")},
            "by_module": {g.key: {"intruders": g.intruders,
                                  "effective_rank_mean": round(g.effective_rank_mean, 2)}
                          for g in s.modules},
        }
    recipe = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    print(json.dumps(rows, indent=2))
    (out / "lora_vs_full.json").write_text(json.dumps({"recipe": recipe, "results": rows},
                                                      indent=2))


if __name__ == "__main__":
    main()
