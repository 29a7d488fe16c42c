"""What a fine-tune shows and leaves behind: the console log and progress bar, the output folder
(HF model or PEFT adapter), ``evalkit_finetune.json`` and the loss curve."""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import evalkit
from evalkit.checkpoints import Checkpoint
from evalkit.finetune.data import Dataset
from evalkit.finetune.schema import (
    MANIFEST_NAME,
    BaseInfo,
    DataInfo,
    FinetuneConfig,
    HftInfo,
    LoraInfo,
    Manifest,
)

if TYPE_CHECKING:
    from evalkit.finetune.train import TrainState

LOSS_CURVE_NAME = "loss.png"


class Log:
    """Console output of the main process (other processes stay quiet)."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console

        self.enabled = enabled
        self.console = Console(stderr=True)

    def print(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)

    def start(self, config: FinetuneConfig, base: Checkpoint, data: Dataset, trainable: int,
              total: int, steps: int, done: int) -> None:
        cut = f", {data.truncated} truncated at {config.max_len}" if data.truncated else ""
        cut += f", {data.dropped} dropped (no completion left)" if data.dropped else ""
        self.print(f"[bold]finetune[/bold] {config.method} · base {base.spec} · data {data.spec}: "
                   f"{len(data.examples)} examples, {data.n_tokens} tokens "
                   f"({data.n_target_tokens} trained on){cut}")
        self.print(f"  trainable parameters {trainable:,} of {total:,} "
                   f"({100 * trainable / max(total, 1):.2f}%) · {steps} steps"
                   + (f" · resuming at step {done}" if done else ""))

    def resumed(self, checkpoint: Path) -> None:
        self.print(f"  resuming from {checkpoint}")

    @contextmanager
    def progress(self, total: int, done: int, method: str
                 ) -> Iterator[Callable[[float, float], None]]:
        """A rich progress bar; yields ``advance(loss, tokens_per_second)``."""
        from rich.progress import TextColumn

        from evalkit.progress import progress_bar

        if self.enabled and not self.console.is_terminal:
            yield self._plain_progress(total, done, method)  # logs: a line every 5% instead
            return
        bar = progress_bar(TextColumn("loss {task.fields[loss]}"),
                           TextColumn("{task.fields[speed]} tok/s"), remaining=True,
                           enabled=self.enabled, out=self.console)
        task = bar.add_task(f"[bold]{method}[/bold]", total=total, completed=done, loss="-",
                            speed="-")

        def advance(loss: float, tokens_per_second: float) -> None:
            bar.update(task, advance=1, loss=f"{loss:.4f}", speed=f"{tokens_per_second:.0f}")

        with bar:
            yield advance

    def _plain_progress(self, total: int, done: int, method: str) -> Callable[[float, float], None]:
        every = max(total // 20, 1)
        step = done

        def advance(loss: float, tokens_per_second: float) -> None:
            nonlocal step
            step += 1
            if step % every == 0 or step == total:
                self.print(f"  {method} step {step}/{total} loss {loss:.4f} "
                           f"{tokens_per_second:.0f} tok/s")

        return advance

    def done(self, folder: Path, state: TrainState) -> None:
        self.print(f"  final loss {state.losses[-1]:.4f} · "
                   f"{state.tokens / max(state.seconds, 1e-9):.0f} tok/s · saved {folder}")


def save(accelerator: Any, model: Any, tokenizer: Any, *, out: Path, work: Path,
         config: FinetuneConfig, base: Checkpoint, data: Dataset, stored_dtype: Any,
         lora: LoraInfo | None, hft: HftInfo | None, trainable: int, total: int,
         state: TrainState) -> Path:
    """Write the finished folder next to the work folder, then move it to ``out`` in one rename."""
    staging = work / "final"
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # gathers shards under FSDP / ZeRO-3
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        if lora is not None:
            unwrapped.save_pretrained(staging, state_dict=state_dict)
        else:
            # Back to the dtype the base is stored in: frozen weights stay bit-identical.
            state_dict = {k: v.to(stored_dtype) for k, v in state_dict.items()}
            unwrapped.config.dtype = stored_dtype
            unwrapped.save_pretrained(staging, state_dict=state_dict)
            tokenizer.save_pretrained(staging)
        plot_loss(state.losses, staging / LOSS_CURVE_NAME,
                  title=f"{config.method} · {base.name} · {data.spec}")
        manifest = _manifest(config, base, data, lora, hft, trainable, total, state,
                             accelerator.num_processes)
        (staging / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
        _publish(staging, out)
        shutil.rmtree(work, ignore_errors=True)
    accelerator.wait_for_everyone()
    return out


def _publish(staging: Path, out: Path) -> None:
    """Move the finished folder into place; an old folder (``--overwrite``) goes only after."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _manifest(config: FinetuneConfig, base: Checkpoint, data: Dataset, lora: LoraInfo | None,
              hft: HftInfo | None, trainable: int, total: int, state: TrainState,
              processes: int) -> Manifest:
    return Manifest(
        evalkit_version=evalkit.__version__,
        kind="adapter" if lora is not None else "model",
        method=config.method,
        base=BaseInfo(spec=base.spec, config=config.base_config, fingerprint=base.fingerprint,
                      path=str(base.path)),
        data=DataInfo(spec=data.spec, limit=config.limit, fingerprint=data.fingerprint,
                      format=data.format,
                      examples=len(data.examples), tokens=data.n_tokens,
                      target_tokens=data.n_target_tokens, truncated=data.truncated,
                      dropped=data.dropped),
        seed=config.seed,
        hyperparameters=config.hyperparameters(),
        lora=lora,
        hft=hft,
        trainable_params=trainable,
        total_params=total,
        processes=processes,
        effective_batch_size=config.batch_size * config.grad_accum * processes,
        steps=state.step,
        final_loss=state.losses[-1],
        loss_history=[round(x, 6) for x in state.losses],
        tokens_per_second=round(state.tokens / max(state.seconds, 1e-9), 2),
        wall_time_s=round(state.seconds, 2),
        versions=versions(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "evalkit": evalkit.__version__}
    for package in ("torch", "transformers", "peft", "accelerate"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def plot_loss(losses: list[float], path: Path, title: str) -> None:
    """Training loss per optimizer step (with a moving average once there are many steps)."""
    from matplotlib.figure import Figure  # the object API: no pyplot global state, no display

    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.subplots()
    steps = range(1, len(losses) + 1)
    ax.plot(steps, losses, lw=1, alpha=0.5 if len(losses) > 20 else 1.0, label="loss")
    if len(losses) > 20:
        window = max(len(losses) // 20, 2)
        recent = [losses[max(0, i - window + 1):i + 1] for i in range(len(losses))]
        smooth = [sum(r) / len(r) for r in recent]
        ax.plot(steps, smooth, lw=2, label=f"mean of last {window}")
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
