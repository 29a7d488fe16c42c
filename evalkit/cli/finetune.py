"""`evalkit finetune`: make a tuned checkpoint (full, LoRA/rsLoRA or HFT) from BASE."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from evalkit.cli.app import app
from evalkit.cli.options import StateDictConfig
from evalkit.errors import EvalkitError


@app.command()
def finetune(
    base: Annotated[str, typer.Argument(
        help="Checkpoint to tune: model folder, .ckpt/.pt state dict, hub id, .gguf or "
             "builtin:smollm2-135m.")],
    data: Annotated[str, typer.Option(
        help="mbpp:train, gsm8k:train, finetunebench:fictional_people|latest_news|medical, "
             "or a .jsonl with prompt/completion or messages.")],
    method: Annotated[str, typer.Option(help="full | lora | hft")],
    limit: Annotated[int | None, typer.Option(
        help="Train on the first N examples of --data only (file order, as `evalkit run "
             "--limit N` picks its items).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output folder \\[default: out/<base>-<data>-<method>].")] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha \\[default: 2 × rank].")] = None,
    rslora: Annotated[bool, typer.Option("--rslora", help="Scale LoRA by alpha/√rank.")] = False,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.0,
    target_modules: Annotated[list[str] | None, typer.Option(
        help="LoRA target modules, repeated or comma-separated \\[default: all linear layers "
             "but the LM head].")] = None,
    hft_stage: Annotated[int, typer.Option(
        help="HFT stage: each stage draws a new random half (same seed, new stage).")] = 0,
    epochs: Annotated[int | None, typer.Option(
        help="Passes over the data \\[default: 3; 10 for finetunebench:*].")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Peak learning rate \\[default: 1e-5 full/hft; lora 2e-4, 1e-3 for "
             "finetunebench:*].")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per micro-batch.")] = 8,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    max_len: Annotated[int, typer.Option(help="Longest example in tokens.")] = 1024,
    truncate: Annotated[bool, typer.Option(
        "--truncate", help="Cut longer examples to --max-len (counted) instead of failing.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for data order, LoRA init and HFT draw.")] = 0,
    precision: Annotated[str | None, typer.Option(
        help="fp32 | bf16 (autocast) \\[default: the accelerate config's, else fp32].")] = None,
    group_by_length: Annotated[bool, typer.Option(
        help="Batch examples of similar length together (less padding).")] = True,
    save_every: Annotated[int, typer.Option(
        help="Optimizer steps between resumable checkpoints.")] = 50,
    data_dir: Annotated[Path | None, typer.Option(
        help="Local benchmark data folder \\[default: $EVALKIT_DATA_DIR, else the HF hub].")
    ] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing output folder / unfinished run.")] = False,
    base_config: StateDictConfig = None,
) -> None:
    """Fine-tune BASE on --data and write a model folder (full, hft) or a PEFT adapter (lora).

    Rerunning an interrupted command resumes from its last checkpoint. Multi-GPU: run the same
    command under `accelerate launch -m evalkit finetune ...` (see docs/finetune.md).
    """
    from pydantic import ValidationError

    from evalkit.finetune import FinetuneConfig
    from evalkit.finetune import finetune as run_finetune

    modules = [m for value in target_modules or [] for m in value.split(",") if m.strip()]
    try:
        config = FinetuneConfig(
            base=base, base_config=base_config, data=data, limit=limit, method=method,
            out=out or _default_out(base, data, method),
            rank=rank, alpha=alpha, rslora=rslora, lora_dropout=lora_dropout,
            target_modules=[m.strip() for m in modules] or None, hft_stage=hft_stage,
            epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
            max_len=max_len, truncate=truncate, seed=seed, precision=precision,
            group_by_length=group_by_length, save_every=save_every, data_dir=data_dir,
            overwrite=overwrite,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "--" + str(first["loc"][0]).replace("_", "-")
        raise EvalkitError(f"{field}: {first['msg']}") from None
    from evalkit.paths import writable_folder

    writable_folder(Path(config.out).absolute().parent, "the folder of --out")
    run_finetune(config)


def _default_out(base: str, data: str, method: str) -> Path:
    def short(spec: str) -> str:
        spec = spec.removeprefix("builtin:").removeprefix("finetunebench:").rstrip("/")
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(spec).name.removesuffix(".jsonl"))

    return Path("out") / f"{short(base)}-{short(data)}-{method}"
