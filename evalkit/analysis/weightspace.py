"""The per-matrix pass behind ``evalkit analyze``: stream, decompose, summarise, cache.

Memory: one matrix pair at a time. For an m×n matrix the pass holds W_b and ΔW in float32
(W_t = W_b + ΔW only while its top-k vectors are computed), float64 blocks of a few thousand
rows for the Gram products, and, for intruders, the base's U (≤ m·n) and the SVD workspace:
a few times the largest analysed matrix, plus the interpreter and its libraries (~0.4 GB).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.analysis import intruders, spectral
from evalkit.analysis.weights import (
    WeightSource,
    adapter_info,
    layer_index,
    module_name,
    read_delta,
    select_matrices,
)
from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError
from evalkit.paths import cache_dir

if TYPE_CHECKING:
    import torch


@dataclass
class Options:
    k: int = 10
    epsilon: float = 0.5
    modules: list[str] | None = None
    include_embeddings: bool = False
    device: str = "cpu"
    dtype: str = "float32"  # decompositions of the base (float64 for tests / small models)
    spectra_only: bool = False  # ΔW spectra only: no base/tuned SVDs, no intruders
    heatmap: str | None = None  # matrix whose |U_tᵀU_b| to keep (default: most intruders)
    use_cache: bool = True
    progress: bool = True


@dataclass
class WeightAnalysis:
    options: Options
    base: dict
    tuned: dict
    rows: list[dict]
    skipped: list[dict]
    lora: dict | None
    cache: dict
    seconds: float
    heatmap: dict | None = None  # {"name", "cos": k × r numpy array, "max_cos": [...]}
    storage_dtypes: list[str] = field(default_factory=list)


class BaseSVDCache:
    """Thin SVDs (U, σ) of a base model's matrices on disk, keyed by the base's content."""

    def __init__(self, fingerprint: str, dtype: str, enabled: bool = True):
        self.dir = cache_dir() / "svd" / fingerprint / dtype
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def _file(self, name: str) -> Path:
        return self.dir / f"{name}.safetensors"

    def get(self, name: str, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]
            ) -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors import safe_open
        from safetensors.torch import save_file

        path = self._file(name)
        if self.enabled and path.exists():
            try:
                with safe_open(path, framework="pt") as f:
                    u, s = f.get_tensor("U"), f.get_tensor("S")
                self.hits += 1
                return u, s
            except Exception:  # a damaged cache entry is recomputed, never trusted
                path.unlink(missing_ok=True)
        u, s = compute()
        self.misses += 1
        if self.enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_file({"U": u.detach().cpu().contiguous(), "S": s.detach().cpu().contiguous()},
                      str(tmp))
            os.replace(tmp, path)
        return u, s


def torch_dtype(name: str) -> torch.dtype:
    import torch

    if name not in ("float32", "float64"):
        raise EvalkitError(f"--dtype must be float32 or float64, not {name}")
    return getattr(torch, name)


def check_device(device: str) -> str:
    import torch

    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EvalkitError("--device cuda asked for, but torch sees no CUDA device")
        return device
    raise EvalkitError(f"--device must be cpu or cuda, not {device}")


def analyze_matrix(w_b: torch.Tensor, dw: torch.Tensor, *, k: int, epsilon: float,
                   base_svd: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None
                   ) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Everything the table reports about one matrix, and |U_bᵀU_t| (None if not computed).

    ``base_svd`` returns the base's thin (U, σ); without it only ΔW's spectrum is computed
    (and W_t = W_b + ΔW is never formed, so the pass holds two matrices, not three).
    """
    base_norm = float(w_b.norm())
    delta_norm = float(dw.norm())
    row: dict[str, Any] = {
        "base_norm": base_norm,
        "delta_norm": delta_norm,
        "rel_update": delta_norm / base_norm if base_norm > 0 else float("nan"),
    }
    k = min(k, *w_b.shape)
    if delta_norm == 0.0:
        # W_t = W_b: every tuned singular vector is a base singular vector, nothing moved.
        row.update(stable_rank=float("nan"), effective_rank=0.0, energy_rank=0,
                   delta_sigma_1=0.0)
        if base_svd is not None:
            row.update(subspace_sim=1.0, max_angle_deg=0.0, intruders=0, max_cos=[1.0] * k)
        return row, None
    s = spectral.singular_values(dw)
    row.update(stable_rank=spectral.stable_rank(s), effective_rank=spectral.effective_rank(s),
               energy_rank=spectral.energy_rank(s), delta_sigma_1=float(s[0]))
    if base_svd is None:
        return row, None
    u_b, _ = base_svd()
    u_t, s_t, _ = spectral.top_singular(w_b + dw, k)
    cos = intruders.cosine_matrix(u_b, u_t)  # r_b × k
    max_cos = [float(x) for x in cos.amax(dim=0)]
    q_b = u_b[:, :k]
    cosines = spectral.principal_cosines(q_b, u_t.to(q_b.dtype))
    row.update(
        subspace_sim=spectral.subspace_similarity(q_b, u_t.to(q_b.dtype)),
        max_angle_deg=float(spectral.principal_angles_deg(cosines).max()),
        intruders=intruders.count(max_cos, epsilon),
        max_cos=max_cos,
        sigma=[float(x) for x in s_t],
    )
    return row, cos


def analyze_weights(base: Checkpoint, tuned: Checkpoint, options: Options) -> WeightAnalysis:
    """Stream every selected matrix of BASE and TUNED through ``analyze_matrix``."""
    started = time.perf_counter()
    dtype = torch_dtype(options.dtype)
    device = check_device(options.device)
    if options.k < 1:
        raise EvalkitError("--k must be at least 1")
    if not 0 < options.epsilon < 1:
        raise EvalkitError("--epsilon must be between 0 and 1")
    base_src, tuned_src = WeightSource(base), WeightSource(tuned)
    selection = select_matrices(base_src, tuned_src, modules=options.modules,
                                include_embeddings=options.include_embeddings)
    if not selection.names:
        raise EvalkitError("no matrix to analyse: every tensor was skipped "
                           f"({_reason_counts(selection.skipped)})")
    if options.heatmap and options.heatmap not in selection.names:
        raise EvalkitError(f"--heatmap {options.heatmap} is not among the analysed matrices")
    cache = BaseSVDCache(base_src.fingerprint, options.dtype, enabled=options.use_cache)
    rows: list[dict] = []
    heat: dict | None = None
    heat_rank = (-1, 0.0)
    with ProgressBar(options.progress, len(selection.names)) as progress:
        for name in selection.names:
            progress.start(name)
            w_b, dw = (t.to(device) for t in read_delta(base_src, tuned_src, name, dtype))

            def base_svd(name=name, w_b=w_b):
                u, s = cache.get(name, lambda: tuple(
                    t.cpu() for t in spectral.thin_svd(w_b, dtype)))
                return u.to(device), s.to(device)

            row, cos = analyze_matrix(
                w_b, dw, k=options.k, epsilon=options.epsilon,
                base_svd=None if options.spectra_only else base_svd)
            lora = tuned_src.lora.modules.get(name) if tuned_src.lora else None
            row = {
                "name": name,
                "module": module_name(name),
                "layer": layer_index(name),
                "rows": w_b.shape[0],
                "cols": w_b.shape[1],
                "dtype": tuned_src.storage_dtype(name),
                "lora_r": lora.r if lora else None,
                "lora_scale": lora.scale if lora else None,
                **row,
            }
            rows.append(row)
            if cos is not None:
                rank = (row["intruders"], -min(row["max_cos"]))
                if name == options.heatmap or (options.heatmap is None and rank > heat_rank):
                    heat_rank = rank
                    heat = {"name": name, "cos": cos.T.double().cpu().numpy(),
                            "max_cos": row["max_cos"]}
            del w_b, dw
            progress.done()
    return WeightAnalysis(
        options=options,
        base=base.describe(),
        tuned=tuned.describe(),
        rows=rows,
        skipped=selection.skipped,
        lora=adapter_info(tuned_src),
        cache={"dir": str(cache.dir), "hits": cache.hits, "misses": cache.misses,
               "enabled": cache.enabled},
        seconds=time.perf_counter() - started,
        heatmap=heat,
        storage_dtypes=sorted({tuned_src.storage_dtype(n) for n in selection.names}
                              | {base_src.storage_dtype(n) for n in selection.names}),
    )


def _reason_counts(skipped: list[dict]) -> str:
    from collections import Counter

    counts = Counter(s["reason"].split(":")[0] for s in skipped)
    return ", ".join(f"{n} {r}" for r, n in counts.most_common()) or "no tensors"


class ProgressBar:
    """A rich progress bar on stderr, one step per matrix (does nothing when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from evalkit.progress import progress_bar

            self._bar = progress_bar(remaining=True, transient=True)
            self._bar.start()
            self._task = self._bar.add_task("matrices", total=self.total)
        return self

    def start(self, name: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=name)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
