"""The reference fine-tuner behind `evalkit finetune`: full, LoRA/rsLoRA (peft) and HFT.

Built on transformers + peft + accelerate; see docs/finetune.md. Torch and friends are imported
inside the functions that need them.
"""

from evalkit.finetune.schema import MANIFEST_NAME, FinetuneConfig, Manifest
from evalkit.finetune.train import finetune

__all__ = ["MANIFEST_NAME", "FinetuneConfig", "Manifest", "finetune"]
