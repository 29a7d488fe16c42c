"""Intruder dimensions ("LoRA vs Full Fine-tuning: An Illusion of Equivalence", analyzers.md §1).

A top-k left singular vector y_j of the merged tuned matrix is an intruder when it is far from
EVERY left singular vector of the base: s_j = max_i |cos(y_j, x_i)| < ε. Being orthogonal to the
base's top subspace is not enough (oracle C).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

EPSILON_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def cosine_matrix(u_b: torch.Tensor, u_t: torch.Tensor) -> torch.Tensor:
    """|U_bᵀ U_t|: row i base vector, column j tuned vector (both with unit columns)."""
    return (u_b.T @ u_t.to(u_b.dtype)).abs()


def max_abs_cos(u_b: torch.Tensor, u_t: torch.Tensor) -> torch.Tensor:
    """s_j = max over all base left singular vectors of |cos(y_j, x_i)|, one per tuned vector."""
    return cosine_matrix(u_b, u_t).amax(dim=0)


def count(s: list[float], epsilon: float) -> int:
    """Number of intruders among the top-k tuned vectors at threshold ε."""
    return sum(1 for x in s if x < epsilon)


def curve(s: list[float], grid: tuple[float, ...] = EPSILON_GRID) -> dict[float, int]:
    """Intruder count for every ε of the grid (free once the s_j are known)."""
    return {eps: count(s, eps) for eps in grid}


def top_intruder(s: list[float], epsilon: float) -> int | None:
    """Index (by singular value, largest first) of the first intruder, or None."""
    return next((j for j, x in enumerate(s) if x < epsilon), None)
