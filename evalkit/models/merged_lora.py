"""A LoRA adapter merged into a full copy of its base, cached by content.

vLLM-CPU's LoRA ops gather every token's adapter weights: the tuned side of a compare ran 3.5x
slower than the base on the same items. On CPU the vllm backend serves this merged copy
instead (the same weights, the base model's speed); on GPU vLLM's own LoRA kernels are fast and
one engine serves both sides.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from evalkit.checkpoints import Checkpoint
from evalkit.paths import cache_dir


def merged_copy(adapter: Checkpoint) -> Path:
    """The folder of ``adapter`` merged into its base (written once, then reused)."""
    from evalkit.analysis.edit import merge_adapter
    from evalkit.analysis.weights import WeightSource
    from evalkit.progress import console

    key = WeightSource(adapter).fingerprint  # base + adapter content
    dest = cache_dir() / "merged" / f"{adapter.path.name}-{key[:16]}"
    if (dest / "model.safetensors").exists():
        return dest
    console.print(f"merging {adapter.spec} into its base for the CPU engine (once): {dest}",
                  style="dim", markup=False, highlight=False)
    try:
        merge_adapter(adapter, dest)
    except Exception:
        if not (dest / "model.safetensors").exists():  # another run merged it meanwhile
            raise
    return dest


def merges_adapters(backend: str) -> bool:
    """Does ``backend`` serve a LoRA adapter merged, in an engine of its own (vLLM-CPU), so
    that base and adapter need an engine each? Read without importing vLLM."""
    if backend != "vllm":
        return False
    try:
        metadata.version("vllm-cpu")
    except metadata.PackageNotFoundError:
        return False
    return True
