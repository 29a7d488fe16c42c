"""Coverage of the 95% CI of Δ for paired 0/1 outcomes: >= 93% in every cell of the grid.

The data-generating process (also in docs/ci-gate.md): n items; the base model gets an item
right with probability p, the tuned model with probability q = p + s·Δ, where s = +1 when
p < 0.5 and s = -1 otherwise (the change moves towards 50%, so q stays in [0, 1]; at p = 0.5 it
is a drop, the case the gate exists for). The two outcomes of an item are correlated with
coefficient ρ (Pearson's φ of the 2x2 cell probabilities, clipped to the feasible range):
ρ = 0.5 models a fine-tune that mostly keeps its base model's answers; ρ = 0 (independent
outcomes) is also checked. Δ ∈ {0, 0.02, 0.10} ("small" = 2 pp, "large" = 10 pp).

2,000 datasets per cell, drawn as multinomial 2x2 counts (the interval depends on the data
only through them), all cells in one vectorised pass: about a second.
"""

from __future__ import annotations

import numpy as np
import pytest

from evalkit import stats

NS = (20, 50, 100, 500)
PS = (0.05, 0.1, 0.5, 0.9)
DELTAS = (0.0, 0.02, 0.10)
DATASETS = 2_000


def cell_probabilities(p: float, delta: float, rho: float) -> np.ndarray:
    """(both right, base only, tuned only, both wrong) for the process in the module doc."""
    q = p + (delta if p < 0.5 else -delta)
    both = p * q + rho * np.sqrt(p * (1 - p) * q * (1 - q))
    both = min(max(both, max(0.0, p + q - 1)), min(p, q))
    return np.array([both, p - both, q - both, 1 - p - q + both])


def coverage_table(rho: float, seed: int = 12) -> dict[tuple[int, float, float], float]:
    rng = np.random.default_rng(seed)
    table = {}
    for n in NS:
        for p in PS:
            for delta in DELTAS:
                cells = cell_probabilities(p, delta, rho)
                counts = rng.multinomial(n, cells, size=DATASETS)
                low, high = stats.newcombe_paired_ci(*counts.T)
                true = cells[2] - cells[1]
                table[n, p, delta] = float(np.mean((low <= true) & (true <= high)))
    return table


@pytest.mark.parametrize("rho", [0.5, 0.0])
def test_newcombe_interval_covers_at_least_93_percent_in_every_cell(rho):
    table = coverage_table(rho)
    assert len(table) == 48
    low = {cell: c for cell, c in table.items() if c < 0.93}
    assert not low, low
    # ... and it is not coverage bought with useless width: on average close to nominal.
    assert 0.95 <= np.mean(list(table.values())) <= 0.99


def test_the_bootstrap_fails_the_binary_grid():
    # Why 0/1 rows no longer use the bootstrap (even expanded): n = 20, p = 0.1, a 2 pp change
    # covers ~70%.
    rng = np.random.default_rng(0)
    cells = cell_probabilities(0.1, 0.02, 0.5)
    cat = rng.choice(4, size=(DATASETS, 20), p=cells)
    d = np.isin(cat, (0, 2)).astype(float) - np.isin(cat, (0, 1)).astype(float)
    low, high = stats.bootstrap_ci(d, resamples=2_000, seed=1)
    true = cells[2] - cells[1]
    assert np.mean((low <= true) & (true <= high)) < 0.8
    low, high = stats.newcombe_paired_ci(*[np.sum(cat == k, axis=1) for k in range(4)])
    assert np.mean((low <= true) & (true <= high)) >= 0.93


def test_newcombe_matches_published_values():
    # Fagerland, Lydersen & Laake (2017), Statistical Analysis of Contingency Tables, ch. 8,
    # complete response before/after consolidation therapy (Cavo et al. 2012): table
    # [[59, 6], [16, 80]], estimate -0.0621, Newcombe square-and-add 95% CI -0.1186 to -0.0046
    # (also the R package contingencytables' test). Rows = first (here: tuned) outcome.
    low, high = stats.newcombe_paired_ci(59, 16, 6, 80)
    assert (round(float(low), 4), round(float(high), 4)) == (-0.1186, -0.0046)
    # The building block: Wilson's score interval, against scipy's implementation.
    from scipy.stats import binomtest

    for k, n in ((0, 20), (1, 20), (7, 41), (20, 20), (150, 500)):
        ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
        low, high = stats.wilson_interval(k, n)
        assert (float(low), float(high)) == pytest.approx((ref.low, ref.high), abs=1e-12)


@pytest.mark.parametrize("n", [20, 50])
@pytest.mark.parametrize("shift", [0.0, -0.1])
def test_expanded_bootstrap_covers_continuous_items_at_small_n(n, shift):
    # Continuous rows: two samples per item (per-item values 0, 0.5, 1); each item's pass
    # probability is uniform on [0, 1] for the base model and shifted (clipped) for the tuned.
    rng = np.random.default_rng(n)
    p_base = rng.uniform(0, 1, size=(DATASETS, n))
    p_tuned = np.clip(p_base + shift, 0, 1)
    d = rng.binomial(2, p_tuned) / 2 - rng.binomial(2, p_base) / 2
    # E[clip(U + s, 0, 1) - U] for U uniform on [0, 1] and s <= 0 is s + s**2 / 2.
    true = shift + shift**2 / 2 if shift < 0 else 0.0
    low, high = stats.bootstrap_ci(d, resamples=2_000, seed=3)
    assert np.mean((low <= true) & (true <= high)) >= 0.93
