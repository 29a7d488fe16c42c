"""Generation backends behind one small interface; each imported only when used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from evalkit.errors import EvalkitError
from evalkit.models.base import Backend, Completion, GenRequest

if TYPE_CHECKING:
    from evalkit.checkpoints import Checkpoint

BACKENDS = ("vllm", "hf", "openai")

__all__ = ["BACKENDS", "Backend", "Completion", "GenRequest", "load_backend"]


def load_backend(name: str, checkpoint: Checkpoint, *, adapters: Sequence[Checkpoint] = (),
                 **options) -> Backend:
    """Start a backend serving ``checkpoint`` (a model, or an adapter with its base).

    ``adapters`` are LoRA adapters of the same base that requests may select; passing them lets
    one engine serve base and tuned requests (the base weights load once).
    """
    if checkpoint.kind == "adapter":
        adapters = [checkpoint, *adapters]
        checkpoint = checkpoint.base
    for a in adapters:
        if a.base is None or a.base.fingerprint != checkpoint.fingerprint:
            raise EvalkitError(f"adapter {a.spec} is not an adapter of {checkpoint.spec}")
    if name == "vllm":
        from evalkit.models.vllm import VLLMBackend

        return VLLMBackend.start(checkpoint, adapters, **options)
    if name == "hf":
        from evalkit.models.hf import HFBackend

        return HFBackend.start(checkpoint, adapters, **options)
    if name == "openai":
        from evalkit.models.openai import OpenAIBackend

        return OpenAIBackend.start(checkpoint, adapters, **options)
    raise EvalkitError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
