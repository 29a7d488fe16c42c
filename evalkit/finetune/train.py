"""The training loop, top to bottom: resolve → data → model → plan → (resume) → steps → save.

One code path for every scale: a plain ``evalkit finetune`` is a single accelerate process;
``accelerate launch -m evalkit finetune ...`` runs the same function in N processes (DDP, FSDP
or DeepSpeed, from the accelerate config). Each optimizer step is ``grad_accum`` micro-batches
per process; the loss is the mean cross-entropy over every completion token of the step, across
micro-batches and processes.

Resuming: the run works in a hidden sibling folder ``.<out>.partial`` that holds a checkpoint
(trainable weights, optimizer, scheduler, RNG, step) every ``save_every`` steps. Rerunning the
same command continues from it; the finished folder appears with one rename at the end, so a
folder at ``--out`` is always complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalkit.checkpoints import Checkpoint, resolve
from evalkit.errors import EvalkitError
from evalkit.finetune import batching, methods, output
from evalkit.finetune.data import IGNORE, Dataset, build_dataset, load_examples
from evalkit.finetune.schema import (
    ADAM_BETAS,
    MAX_GRAD_NORM,
    WARMUP_FRACTION,
    WEIGHT_DECAY,
    FinetuneConfig,
)

OnStep = Callable[[int, float], None]


class TrainState:
    """What a resumed run continues from; saved inside every checkpoint."""

    def __init__(self) -> None:
        self.step = 0
        self.losses: list[float] = []
        self.tokens = 0
        self.seconds = 0.0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def finetune(config: FinetuneConfig, on_step: OnStep | None = None) -> Path:
    """Fine-tune ``config.base`` on ``config.data``; return the finished output folder.

    ``on_step(step, loss)`` is called after every optimizer step (and after its checkpoint).
    """
    config = config.with_defaults()
    out = config.out.expanduser().resolve()
    work = out.parent / f".{out.name}.partial"
    _check_out(out, config.overwrite)
    examples = load_examples(config.data, config.data_dir)  # bad data fails before heavy imports
    # File order, like `evalkit run --limit`: the same N items can then be evaluated.
    examples = examples[:config.limit]
    base = _resolve_base(config.base, config.base_config)

    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed
    from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

    mixed = {None: None, "fp32": "no", "bf16": "bf16"}[config.precision]
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision=mixed)
    # From here on the config states what actually runs (an accelerate config may pick bf16).
    config = config.model_copy(update={
        "precision": "bf16" if accelerator.mixed_precision == "bf16" else "fp32"})
    log = output.Log(accelerator.is_main_process)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    data = build_dataset(config.data, examples, tokenizer, config.max_len, config.truncate)
    steps = batching.plan([len(e.input_ids) for e in data.examples], epochs=config.epochs,
                          batch_size=config.batch_size, grad_accum=config.grad_accum,
                          processes=accelerator.num_processes, seed=config.seed,
                          group_by_length=config.group_by_length)
    if not steps:
        raise EvalkitError(f"{len(data.examples)} examples are too few for one optimizer step of "
                           "grad_accum × processes micro-batches")

    set_seed(config.seed)  # before LoRA draws its random A matrices
    model, stored_dtype = methods.load_model(base.path)
    model, lora, hft = methods.prepare(model, config)
    trainable, total = methods.count_params(model)
    # The fused kernel is several times faster than the per-tensor loop on CPU as on GPU.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.lr, betas=ADAM_BETAS,
                                  weight_decay=WEIGHT_DECAY, fused=True)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(WARMUP_FRACTION * len(steps)), len(steps))
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed wants the micro-batch size; accelerate reads it from a dataloader we don't use.
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            config.batch_size)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainState()
    # The scheduler is stepped by hand once per optimizer step, so it is not prepare()d (accelerate
    # would step it once per process); it is checkpointed with the train state.
    accelerator.register_for_checkpointing(scheduler, state)
    accelerator.register_save_state_pre_hook(_keep_trainable_weights)
    _resume_or_start(accelerator, work, _run_key(config, base, data, accelerator.num_processes),
                     config.overwrite, log)

    log.start(config, base, data, trainable, total, len(steps), state.step)
    model.train()
    with log.progress(len(steps), state.step, config.method) as advance:
        for step in range(state.step, len(steps)):
            started = time.perf_counter()
            loss, tokens = _train_step(accelerator, model, optimizer, data, steps[step], pad_id,
                                       config.grad_accum)
            scheduler.step()
            state.step, state.tokens = step + 1, state.tokens + tokens
            state.seconds += time.perf_counter() - started
            state.losses.append(loss)
            advance(loss, state.tokens / max(state.seconds, 1e-9))
            if state.step % config.save_every == 0 and state.step < len(steps):
                _checkpoint(accelerator, work)
            if on_step is not None:
                on_step(state.step, loss)

    final = output.save(
        accelerator, model, tokenizer, out=out, work=work, config=config, base=base, data=data,
        stored_dtype=stored_dtype, lora=lora, hft=hft, trainable=trainable, total=total,
        state=state,
    )
    log.done(final, state)
    return final


def _train_step(accelerator: Any, model: Any, optimizer: Any, data: Dataset,
                step: batching.Step, pad_id: int, grad_accum: int) -> tuple[float, int]:
    """One optimizer step: this process's micro-batches, then one update. Returns the step's
    mean loss over all processes and the number of tokens they processed."""
    import torch

    # Every process knows the whole step, so the denominator needs no communication.
    targets = sum(data.examples[i].n_target for batch in step for i in batch)
    rank = accelerator.process_index
    loss_sum, tokens = 0.0, 0
    for indices in step[rank * grad_accum:(rank + 1) * grad_accum]:
        batch = batching.collate([data.examples[i] for i in indices], pad_id)
        with accelerator.accumulate(model):
            summed = completion_loss(model, batch, accelerator.device)
            # accelerate divides by grad_accum and DDP averages over processes; undo both so the
            # update follows the mean over every target token of the step.
            accelerator.backward(summed * grad_accum * accelerator.num_processes / targets)
        loss_sum += summed.item()
        tokens += batch["tokens"]
    accelerator.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    totals = accelerator.reduce(torch.tensor([loss_sum, tokens], dtype=torch.float64,
                                             device=accelerator.device), reduction="sum")
    return float(totals[0]) / targets, int(totals[1])


def completion_loss(model: Any, batch: dict, device: Any = "cpu") -> Any:
    """Summed cross-entropy over the batch's target tokens; logits only where targets are."""
    import torch.nn.functional as F

    keep = batch["logits_to_keep"]
    logits = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        position_ids=batch["position_ids"].to(device),
        logits_to_keep=keep,
        use_cache=False,
    ).logits
    targets = batch["labels"][:, -(keep - 1):].to(device)  # logit t predicts token t+1
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                           ignore_index=IGNORE, reduction="sum")


# ------------------------------------------------------------------------ resume support


def _resolve_base(spec: str, config: str | None = None) -> Checkpoint:
    base = resolve(spec, config=config)
    if base.kind != "model":
        raise EvalkitError(f"{spec} is an adapter; fine-tune its base, or merge the adapter first")
    return base


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise EvalkitError(f"{out} already exists and is not empty (--overwrite replaces it)")


def _run_key(config: FinetuneConfig, base: Checkpoint, data: Dataset, processes: int) -> str:
    """Identifies a run by everything that changes its weights; a partial run resumes only
    under the same key."""
    # base_config only says how to read BASE; its content is in base_fingerprint
    settings = config.model_dump(mode="json", exclude={"out", "overwrite", "save_every",
                                                       "data_dir", "base_config"})
    settings |= {"base_fingerprint": base.fingerprint, "data_fingerprint": data.fingerprint,
                 "processes": processes}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _resume_or_start(accelerator: Any, work: Path, key: str, overwrite: bool,
                     log: output.Log) -> None:
    run_file = work / "run.json"
    if run_file.exists():
        same = json.loads(run_file.read_text()).get("key") == key
        if not same and not overwrite:
            raise EvalkitError(
                f"{work} holds an unfinished fine-tune with different settings: rerun that "
                "command to resume it, or pass --overwrite to discard it"
            )
        checkpoint = next((c for c in (work / "checkpoint", work / "checkpoint.old")
                           if c.exists()), None)
        if same and checkpoint is not None:
            kwargs = {} if _shards_itself(accelerator) else {"strict": False}
            accelerator.load_state(str(checkpoint), **kwargs)
            log.resumed(checkpoint)
            return
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        run_file.write_text(json.dumps({"key": key}))
    accelerator.wait_for_everyone()


def _checkpoint(accelerator: Any, work: Path) -> None:
    """Save a resumable state; the previous one is replaced only once the new one is complete."""
    current, fresh, old = work / "checkpoint", work / "checkpoint.tmp", work / "checkpoint.old"
    if accelerator.is_main_process:
        shutil.rmtree(fresh, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(fresh))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(old, ignore_errors=True)
        if current.exists():
            os.replace(current, old)
        os.replace(fresh, current)
        shutil.rmtree(old, ignore_errors=True)


def _keep_trainable_weights(models: list, weights: list[dict], _output_dir: str) -> None:
    """Checkpoints hold only trainable tensors: frozen weights equal the base's (a LoRA
    checkpoint of a 7B model is megabytes, not 14 GB). Resuming loads them non-strictly."""
    for model, state in zip(models, weights, strict=False):
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        for name in list(state):
            if name not in trainable:
                del state[name]


def _shards_itself(accelerator: Any) -> bool:
    """FSDP and DeepSpeed save and load their own (sharded) states."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
