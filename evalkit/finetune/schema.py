"""What a fine-tune is asked to do (``FinetuneConfig``) and what it records (``Manifest``,
written as ``evalkit_finetune.json`` in the output folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

MANIFEST_NAME = "evalkit_finetune.json"
Method = Literal["full", "lora", "hft"]

# Epochs and learning rates when the user gives none (LoRA's low-rank update needs a larger step
# than updating the weights themselves).
DEFAULT_EPOCHS = 3
DEFAULT_LR = {"full": 1e-5, "hft": 1e-5, "lora": 2e-4}
# Knowledge injection (finetunebench:*) memorizes each fact: the FineTuneBench paper trains every
# QA pair for many epochs, and LoRA needs a larger step to store facts in a few minutes.
KNOWLEDGE_EPOCHS = 10
KNOWLEDGE_LR = {"full": 1e-5, "hft": 1e-5, "lora": 1e-3}

# Fixed training choices, recorded in the manifest with the hyperparameters.
WARMUP_FRACTION = 0.05  # linear warmup over the first 5% of steps, then cosine decay to 0
WEIGHT_DECAY = 0.0
MAX_GRAD_NORM = 1.0
ADAM_BETAS = (0.9, 0.999)


class FinetuneConfig(BaseModel):
    """Everything `evalkit finetune` was asked; two runs with equal configs give equal weights."""

    base: str
    base_config: str | None = None  # architecture of a state-dict BASE (--config)
    data: str
    limit: int | None = Field(None, ge=1)  # train on the first `limit` examples of `data` only
    out: Path
    method: Method
    # LoRA
    rank: int = Field(16, ge=1)
    alpha: float | None = None  # default 2 × rank
    rslora: bool = False
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None  # default: every linear layer but the LM head
    # HFT
    hft_stage: int = Field(0, ge=0)
    # training
    epochs: int | None = Field(None, ge=1)  # default: see with_defaults()
    lr: float | None = Field(None, gt=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_len: int = Field(1024, ge=2)
    seed: int = 0
    truncate: bool = False
    group_by_length: bool = True
    precision: Literal["fp32", "bf16"] | None = None  # None: the accelerate config's, else fp32
    save_every: int = Field(50, ge=1)  # optimizer steps between resumable checkpoints
    data_dir: Path | None = None
    overwrite: bool = False

    def with_defaults(self) -> FinetuneConfig:
        """The config with every default filled in (what runs, and what the manifest says)."""
        knowledge = self.data.startswith("finetunebench:")
        epochs = KNOWLEDGE_EPOCHS if knowledge else DEFAULT_EPOCHS
        lr = (KNOWLEDGE_LR if knowledge else DEFAULT_LR)[self.method]
        return self.model_copy(update={
            "epochs": self.epochs if self.epochs is not None else epochs,
            "lr": self.lr if self.lr is not None else lr,
        })

    @property
    def lora_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * self.rank

    def hyperparameters(self) -> dict:
        """The settings that change the weights (the resume check compares these)."""
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "max_len": self.max_len,
            "truncate": self.truncate,
            "group_by_length": self.group_by_length,
            "precision": self.precision,
            "optimizer": {"name": "AdamW (fused)", "betas": list(ADAM_BETAS),
                          "weight_decay": WEIGHT_DECAY},
            "schedule": {"name": "cosine", "warmup_fraction": WARMUP_FRACTION},
            "max_grad_norm": MAX_GRAD_NORM,
            "loss": "mean cross-entropy over completion tokens of each optimizer step",
        }


class BaseInfo(BaseModel):
    spec: str  # what the user passed; checkpoints.resolve() re-resolves adapters from it
    config: str | None = None  # its --config, for a state-dict BASE
    fingerprint: str
    path: str


class LoraInfo(BaseModel):
    rank: int
    alpha: float
    rslora: bool
    scaling: float  # alpha / rank, or alpha / sqrt(rank) with rsLoRA
    dropout: float
    target_modules: list[str] | str


class HftInfo(BaseModel):
    seed: int
    stage: int
    policy: dict[str, str]
    selection: dict[str, list[str]]  # block → modules that trained (relative to the block)
    trainable_params: int
    block_params: int
    trainable_fraction_of_blocks: float


class DataInfo(BaseModel):
    spec: str
    limit: int | None = None  # the first `limit` examples of `spec` (--limit)
    fingerprint: str
    format: str
    examples: int
    tokens: int
    target_tokens: int
    truncated: int
    dropped: int


class Manifest(BaseModel):
    evalkit_version: str
    kind: Literal["model", "adapter"]
    method: Method
    base: BaseInfo
    data: DataInfo
    seed: int
    hyperparameters: dict
    lora: LoraInfo | None = None
    hft: HftInfo | None = None
    trainable_params: int
    total_params: int
    processes: int
    effective_batch_size: int  # examples per optimizer step: batch × grad_accum × processes
    steps: int
    final_loss: float
    loss_history: list[float]  # one value per optimizer step
    tokens_per_second: float
    wall_time_s: float
    versions: dict[str, str]
    created_at: str
