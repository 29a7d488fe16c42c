"""Spectral summaries (analyzers.md §2) and the decompositions behind them.

Singular values of ΔW and the tuned matrix's top-k singular vectors come from the eigen-
decomposition of the smaller Gram matrix, formed in float64: that is the exact path named in
analyzers.md, about twice as fast as an SVD on a CPU, and in float64 the squaring costs nothing
that matters (σ is resolved down to ~1e-7·σ₁, below the float32 storage of the weights). The
base matrix gets a full thin SVD (``torch.linalg.svd``, float32 unless float64 is asked for)
because the intruder test needs every one of its left singular vectors; that SVD is cached.
The same functions run on CPU and CUDA tensors.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


# Rows converted to float64 at a time: the float64 work never copies a whole (embedding-sized)
# matrix, so peak memory stays a few float32 copies of the largest one.
_BLOCK = 2048


def _gram64(w: torch.Tensor) -> torch.Tensor:
    """W·Wᵀ or Wᵀ·W, whichever is smaller, in float64."""
    import torch

    a = w.T if w.shape[0] <= w.shape[1] else w  # G = aᵀa, a's rows along the long side
    g = torch.zeros(a.shape[1], a.shape[1], dtype=torch.float64, device=w.device)
    # One float64 buffer reused for every block: a fresh block each time would leave the C
    # allocator's heap grown by several blocks (measured: +65 MB on a 49152-row embedding).
    buf = torch.empty(min(_BLOCK, a.shape[0]), a.shape[1], dtype=torch.float64, device=w.device)
    for i in range(0, a.shape[0], _BLOCK):
        blk = buf[:min(_BLOCK, a.shape[0] - i)]
        blk.copy_(a[i:i + _BLOCK])
        g.addmm_(blk.T, blk)
    return g


def _times64(a: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """a @ q in float64 (q float64), a block of a's rows at a time."""
    import torch

    out = torch.empty(a.shape[0], q.shape[1], dtype=torch.float64, device=a.device)
    buf = torch.empty(min(_BLOCK, a.shape[0]), a.shape[1], dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], _BLOCK):
        blk = buf[:min(_BLOCK, a.shape[0] - i)]
        blk.copy_(a[i:i + _BLOCK])
        torch.mm(blk, q, out=out[i:i + _BLOCK])
    return out


def _clean_eigenvalues(lam: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Descending, with round-off below max(m, n)·eps·λ₁ set to exactly zero."""
    import torch

    lam = lam.flip(0).clamp(min=0)
    if lam.numel() and lam[0] > 0:
        tol = lam[0] * max(shape) * torch.finfo(torch.float64).eps
        lam = torch.where(lam > tol, lam, torch.zeros_like(lam))
    return lam


def singular_values(w: torch.Tensor) -> torch.Tensor:
    """All min(m, n) singular values of W, descending, float64 (exact zeros stay zero)."""
    import torch

    lam = torch.linalg.eigvalsh(_gram64(w))
    return _clean_eigenvalues(lam, tuple(w.shape)).sqrt()


def top_singular(w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k (U [m×k], σ [k], V [n×k]) of W in float64, via eigh of the smaller Gram matrix."""
    import torch

    m, n = w.shape
    k = min(k, m, n)
    lam, q = torch.linalg.eigh(_gram64(w))
    lam = _clean_eigenvalues(lam, (m, n))[:k]
    q = q.flip(1)[:, :k]
    s = lam.sqrt()
    # Directions with σ = 0 have no partner vector; leave them zero rather than divide by 0.
    inv = torch.where(s > 0, 1.0 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
    if m <= n:
        u, v = q, _times64(w.T, q) * inv
    else:
        u, v = _times64(w, q) * inv, q
    return u, s, v


def thin_svd(w: torch.Tensor, dtype: torch.dtype | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin SVD of W: every left singular vector (m × min(m, n)) and σ, in ``dtype``."""
    import torch

    u, s, _ = torch.linalg.svd(w.to(dtype or w.dtype), full_matrices=False)
    return u, s


def stable_rank(s: torch.Tensor) -> float:
    """Σσ² / σ₁² (NaN for a zero matrix)."""
    s = s.double()
    if s.numel() == 0 or float(s.max()) == 0.0:
        return math.nan
    return float((s**2).sum() / s.max() ** 2)


def effective_rank(s: torch.Tensor) -> float:
    """Roy & Vetterli: exp(−Σ p ln p) with p = σ / Σσ, zeros ignored (0 for a zero matrix)."""
    s = s.double()
    s = s[s > 0]
    if s.numel() == 0:
        return 0.0
    p = s / s.sum()
    return float((-(p * p.log()).sum()).exp())


def energy_rank(s: torch.Tensor, fraction: float = 0.9) -> int:
    """Smallest k with Σ_{i≤k} σᵢ² ≥ fraction·Σσ² (0 for a zero matrix)."""
    import torch

    e = torch.sort(s.double() ** 2, descending=True).values
    total = float(e.sum())
    if total == 0.0:
        return 0
    # A relative slack absorbs round-off when the target is met exactly (e.g. 9 of 10 equal σ).
    cum = e.cumsum(0)
    return int((cum < fraction * total * (1 - 1e-12)).sum()) + 1


def principal_cosines(q_b: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between span(Q_b) and span(Q_t) (orthonormal columns)."""
    import torch

    return torch.linalg.svdvals(q_b.T @ q_t).clamp(0, 1)


def subspace_similarity(q_b: torch.Tensor, q_t: torch.Tensor) -> float:
    """‖Q_bᵀQ_t‖_F² / k: 1 for the same subspace, 0 for orthogonal ones."""
    k = q_t.shape[1]
    return float((q_b.T @ q_t).double().pow(2).sum() / k) if k else math.nan


def principal_angles_deg(cosines: torch.Tensor) -> torch.Tensor:
    return cosines.double().clamp(0, 1).arccos().rad2deg()


def noise_floor(storage_dtype: str) -> float:
    """RMS of rounding a weight to the storage dtype, relative to the weight (u/√3).

    Rounding to nearest adds errors uniform in ±u·|w| (u = unit roundoff), so a tensor stored in
    that dtype carries a full-rank ΔW floor of ‖noise‖_F / ‖W‖_F ≈ u/√3 (bf16: 0.23%)."""
    bits = {"BF16": 8, "F16": 11, "F32": 24, "F64": 53}.get(storage_dtype.upper())
    return 2.0 ** -bits / math.sqrt(3) if bits else math.nan
