"""TuCo: how much of the tuned model's computation on a prompt the fine-tune contributes.

Nuti et al., ICML 2025 (analyzers.md §3). The TUNED model runs forward; a forward hook on each of
its decoder layers l feeds that layer's input x_l (the tuned residual stream) through the BASE
model's layer l with the same keyword arguments (position embeddings, mask; no cache):

    PTC_l = base_block(x_l) − x_l          FTC_l = tuned_block(x_l) − x_l − PTC_l

and the stream continues with the tuned update. At the last token,
TuCo = ‖Σ_l FTC_l‖₁ / (‖Σ_l PTC_l‖₁ + ‖Σ_l FTC_l‖₁).

Hooks, not ``output_hidden_states``: HF's last hidden state is taken after the final norm, so
differences of hidden states are not block updates. Both models live in memory (two forward
passes per prompt); an adapter is merged in memory, never on disk.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    import torch


def tuco_from_contributions(ptc: torch.Tensor, ftc: torch.Tensor) -> float:
    """TuCo from per-layer contributions at the last token (each [L, d]); NaN if both sum to 0."""
    p = float(ptc.sum(0).abs().sum())
    f = float(ftc.sum(0).abs().sum())
    return f / (p + f) if p + f > 0 else math.nan


def decoder_layers(model: Any) -> Any:
    """The ModuleList of decoder blocks of a causal LM."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise EvalkitError(f"cannot find the decoder layers of {type(model).__name__}")
    return layers


def _first(output: Any) -> torch.Tensor:
    return output if not isinstance(output, tuple | list) else output[0]


def prompt_contributions(base_model: Any, tuned_model: Any, input_ids: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(PTC, FTC) at the last token for one prompt (batch of one): two [L, d] float64 tensors."""
    import torch

    base_layers = decoder_layers(base_model)
    tuned_layers = decoder_layers(tuned_model)
    if len(base_layers) != len(tuned_layers):
        raise EvalkitError(f"BASE has {len(base_layers)} decoder layers, TUNED "
                           f"{len(tuned_layers)}: TuCo needs the same architecture")
    ptc: list[torch.Tensor | None] = [None] * len(tuned_layers)
    ftc: list[torch.Tensor | None] = [None] * len(tuned_layers)
    busy = [False]  # BASE and TUNED may be one object: don't hook the base call itself

    def make_hook(i: int):
        def hook(module, args, kwargs, output):
            if busy[0]:
                return None
            x = args[0] if args else kwargs["hidden_states"]
            rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            rest.update(past_key_values=None, use_cache=False)
            busy[0] = True
            try:
                base_out = _first(base_layers[i](x, *args[1:], **rest))
            finally:
                busy[0] = False
            tuned_out = _first(output)
            ptc[i] = (base_out - x)[0, -1].double()
            ftc[i] = (tuned_out - base_out)[0, -1].double()
            return None
        return hook

    handles = [layer.register_forward_hook(make_hook(i), with_kwargs=True)
               for i, layer in enumerate(tuned_layers)]
    try:
        with torch.no_grad():
            tuned_model.get_decoder()(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    if any(p is None for p in ptc):
        raise EvalkitError("a decoder layer did not run; cannot compute TuCo")
    return torch.stack(ptc), torch.stack(ftc)


def tuco_scores(base_model: Any, tuned_model: Any, tokenizer: Any,
                prompts: list[str | list[dict]], progress: bool = True
                ) -> tuple[list[float], list[int]]:
    """TuCo of every prompt (text, or chat messages rendered with TUNED's chat template, as the
    runner does), and its token count."""
    from evalkit.analysis.weightspace import ProgressBar

    device = next(tuned_model.parameters()).device
    scores, tokens = [], []
    with ProgressBar(progress, len(prompts)) as bar:
        for i, prompt in enumerate(prompts):
            bar.start(f"prompt {i + 1}")
            if not isinstance(prompt, str):
                if not tokenizer.chat_template:
                    raise EvalkitError("chat prompts need a chat template; TUNED's tokenizer "
                                       "has none (use the task's non-chat variant)")
                prompt = tokenizer.apply_chat_template(prompt, tokenize=False,
                                                       add_generation_prompt=True)
            ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
            if ids.shape[1] == 0:
                raise EvalkitError(f"prompt {i + 1} tokenizes to nothing")
            ptc, ftc = prompt_contributions(base_model, tuned_model, ids)
            scores.append(tuco_from_contributions(ptc, ftc))
            tokens.append(int(ids.shape[1]))
            bar.done()
    return scores, tokens


def load_model(checkpoint: Checkpoint, device: str = "cpu") -> Any:
    """A float32 causal LM in eval mode; an adapter is merged into it in memory."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(checkpoint.model_path, dtype=torch.float32,
                                                 attn_implementation="eager")
    if checkpoint.kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(checkpoint.path)).merge_and_unload()
    return model.to(device).eval()


class TucoSummary(BaseModel):
    task: str
    n: int
    mean: float
    std: float
    median: float
    quantiles: dict[str, float]  # "0.1", "0.25", "0.75", "0.9"
    base: dict[str, Any]
    tuned: dict[str, Any]
    per_prompt: list[float]
    tokens: list[int]


@dataclass
class TucoResult:
    summary: TucoSummary

    def write(self, out: Path) -> dict[str, str]:
        import pandas as pd

        out.mkdir(parents=True, exist_ok=True)
        stem = f"tuco_{_safe(self.summary.task)}"
        files = {"summary": f"{stem}.json", "table": f"{stem}.csv", "plot": f"{stem}.png"}
        (out / files["summary"]).write_text(self.summary.model_dump_json(indent=2))
        pd.DataFrame({"index": range(self.summary.n), "tuco": self.summary.per_prompt,
                      "tokens": self.summary.tokens}).to_csv(out / files["table"], index=False)
        _histogram(self.summary, out / files["plot"])
        return files


def summarize(task: str, scores: list[float], tokens: list[int], base: Checkpoint,
              tuned: Checkpoint) -> TucoResult:
    vals = [s for s in scores if not math.isnan(s)]
    if not vals:
        raise EvalkitError("TuCo is undefined on every prompt (both contributions are zero)")
    qs = statistics.quantiles(vals, n=20, method="inclusive") if len(vals) > 1 else vals * 19
    return TucoResult(TucoSummary(
        task=task, n=len(scores), mean=statistics.fmean(vals),
        std=statistics.stdev(vals) if len(vals) > 1 else 0.0, median=statistics.median(vals),
        quantiles={"0.1": qs[1], "0.25": qs[4], "0.75": qs[14], "0.9": qs[17]},
        base=base.describe(), tuned=tuned.describe(), per_prompt=scores, tokens=tokens))


def tuco_for_prompts(base: Checkpoint, tuned: Checkpoint, prompts: list[str | list[dict]], *,
                     name: str,
                     device: str = "cpu", progress: bool = True, models: tuple | None = None
                     ) -> TucoResult:
    """TuCo over a list of prompts (``models``: already loaded (base, tuned, tokenizer))."""
    if not prompts:
        raise EvalkitError(f"{name}: no prompts")
    if models is None:
        models = load_pair(base, tuned, device)
    base_model, tuned_model, tokenizer = models
    scores, tokens = tuco_scores(base_model, tuned_model, tokenizer, prompts, progress)
    return summarize(name, scores, tokens, base, tuned)


def load_pair(base: Checkpoint, tuned: Checkpoint, device: str | None = "cpu") -> tuple:
    """Both models and the tokenizer; ``device=None`` picks CUDA when torch sees one."""
    import torch
    from transformers import AutoTokenizer

    from evalkit.analysis.weightspace import check_device

    device = check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # TUNED's tokenizer (an adapter's own first), else BASE's: both models see the same ids.
    candidates = [Path(p) for p in (tuned.path, tuned.model_path, base.path, base.model_path)]
    tok_dir = next((p for p in candidates if any((p / f).exists() for f in (
        "tokenizer.json", "tokenizer_config.json", "tokenizer.model"))), candidates[0])
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    except (OSError, ValueError) as exc:
        raise EvalkitError(f"cannot load the tokenizer of {tuned.spec}: {exc}") from None
    return load_model(base, device), load_model(tuned, device), tokenizer


def task_prompts(task_name: str, limit: int | None = None, data_dir: Path | None = None
                 ) -> list[str | list[dict]]:
    """The prompts of a registered evalkit task (``evalkit.tasks.load_task``)."""
    from evalkit.tasks import load_task

    task = load_task(task_name, data_dir)
    return [task.prompt(doc) for doc in task.docs(limit=limit)]


def task_tuco(base: Checkpoint, tuned: Checkpoint, task_name: str, *, limit: int | None = None,
              device: str = "cpu", progress: bool = True, models: tuple | None = None,
              data_dir: Path | None = None) -> TucoResult:
    """Per-prompt TuCo over a task's prompts; ``result.summary.mean`` is what `compare` shows."""
    return tuco_for_prompts(base, tuned, task_prompts(task_name, limit, data_dir), name=task_name,
                            device=device, progress=progress, models=models)


def read_prompts(path: Path) -> list[str]:
    """Prompts from a file: JSONL (a string, or an object with "prompt"), else one per line."""
    if not path.exists():
        raise EvalkitError(f"prompts file not found: {path}")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if path.suffix != ".jsonl":
        return lines
    prompts = []
    for i, ln in enumerate(lines, 1):
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as exc:
            raise EvalkitError(f"{path}:{i}: not JSON ({exc})") from None
        prompt = rec if isinstance(rec, str) else rec.get("prompt") if isinstance(rec, dict) \
            else None
        if not isinstance(prompt, str):
            raise EvalkitError(f"{path}:{i}: expected a string or an object with \"prompt\"")
        prompts.append(prompt)
    return prompts


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _histogram(summary: TucoSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = [v for v in summary.per_prompt if not math.isnan(v)]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(vals, bins=min(30, max(5, len(vals) // 3)), range=(0, 1))
    ax.axvline(summary.mean, color="k", ls="--", lw=1, label=f"mean {summary.mean:.3f}")
    ax.set_xlabel("TuCo (share of the last-token update due to the fine-tune)")
    ax.set_ylabel("prompts")
    ax.set_title(f"{summary.task}: {summary.tuned['name']} vs {summary.base['name']}",
                 fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
