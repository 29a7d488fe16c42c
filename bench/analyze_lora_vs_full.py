"""LoRA vs full fine-tuning of the embedded model, seen by `evalkit analyze` (intruder paper).

    .venv/bin/python bench/analyze_lora_vs_full.py [--data finetunebench:fictional_people]
        [--ranks 1,8,16] [--lora-lr 1e-2] [--full-lr 1e-4] [--epochs N]

Makes fine-tunes of BASE with `evalkit finetune` on the same data and for the same number of
epochs: one full, and one LoRA per rank (alpha = 2r, every linear layer but the head). Then it
analyses each against BASE with the default settings (k = 10, ε = 0.5, every block matrix) and
prints the headline numbers: intruders summed over the model, the count-vs-ε curve, effective
and stable rank of ΔW, relative update, and each fine-tune's training loss (last 10 steps).

The paper's qualitative result: intruders for low-rank LoRA, few or none for full fine-tuning,
and a much lower effective rank of ΔW for LoRA. Intruders need an update whose top singular
value reaches the base matrix's top-10 ones; on SmolLM2-135M that takes LoRA's usual learning
rates ×10 (see bench/README.md). Fine-tunes already in --out are reused (same folder name =
same recipe), so rerunning only analyses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def finetune(base: str, out: Path, method: str, lr: float, args, rank: int | None = None
             ) -> None:
    if (out / "evalkit_finetune.json").exists():
        return
    cmd = [sys.executable, "-m", "evalkit", "finetune", base, "--data", args.data,
           "--method", method, "--lr", str(lr), "--batch-size", str(args.batch),
           "--max-len", str(args.max_len), "--truncate", "--out", str(out)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if rank is not None:
        cmd += ["--rank", str(rank)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def late_loss(folder: Path) -> float:
    """Mean training loss over the last 10 optimizer steps (one step's loss is noisy)."""
    losses = json.loads((folder / "evalkit_finetune.json").read_text())["loss_history"][-10:]
    return round(sum(losses) / len(losses), 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="builtin:smollm2-135m")
    p.add_argument("--data", default="finetunebench:fictional_people",
                   help="anything `evalkit finetune --data` takes")
    p.add_argument("--epochs", type=int, default=None, help="default: evalkit finetune's")
    p.add_argument("--ranks", default="1,8,16")
    p.add_argument("--lora-lr", type=float, default=1e-2)
    p.add_argument("--full-lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from evalkit.analysis import report
    from evalkit.analysis.weightspace import Options, analyze_weights
    from evalkit.checkpoints import resolve
    from evalkit.paths import cache_dir

    tag = args.data.replace(":", "-").replace("/", "_") + (f"-e{args.epochs}" if args.epochs
                                                          else "")
    out = args.out or cache_dir() / "bench" / f"lora-vs-full-{tag}"
    out.mkdir(parents=True, exist_ok=True)
    tunes = {f"full lr={args.full_lr:g}": out / f"full-lr{args.full_lr:g}"}
    finetune(args.base, tunes[f"full lr={args.full_lr:g}"], "full", args.full_lr, args)
    for r in (int(x) for x in args.ranks.split(",") if x):
        label = f"lora r={r} lr={args.lora_lr:g}"
        tunes[label] = out / f"lora-r{r}-lr{args.lora_lr:g}"
        finetune(args.base, tunes[label], "lora", args.lora_lr, args, rank=r)

    base = resolve(args.base)
    rows = {}
    for label, folder in tunes.items():
        analysis = analyze_weights(base, resolve(str(folder)), Options(progress=False))
        s = report.write(analysis, out / f"analysis-{folder.name}")
        rows[label] = {
            "loss_last10": late_loss(folder),
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
    print(f"wrote {out / 'lora_vs_full.json'}")


if __name__ == "__main__":
    main()
