"""Property-based tests (hypothesis) of the paired statistics: invariances, bounds, seeds."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as hst
from pytest import approx

from evalkit import stats

binary = hst.lists(hst.tuples(hst.integers(0, 1), hst.integers(0, 1)), min_size=1,
                   max_size=300)
# Per-item means of up to 4 samples (0, 1/4, ..., 1) and pass@k-like values: continuous rows.
levels = hst.sampled_from([0.0, 0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1.0])
continuous = hst.lists(hst.tuples(levels, levels), min_size=1, max_size=120)
seeds = hst.integers(0, 2**32 - 1)
FAST = settings(max_examples=60, deadline=None)


def _split(pairs):
    arr = np.array(pairs, dtype=float)
    return arr[:, 0], arr[:, 1]


@FAST
@given(binary)
def test_binary_swap_flips_delta_keeps_p_and_mirrors_the_ci(pairs):
    x, y = _split(pairs)
    b, c = stats.discordant_counts(x, y)
    assert stats.discordant_counts(y, x) == (c, b)
    assert stats.mcnemar_exact(b, c) == stats.mcnemar_exact(c, b)
    low, high = stats.paired_binary_ci(x, y)
    swapped = stats.paired_binary_ci(y, x)
    assert swapped[0] == -high and swapped[1] == -low
    delta = float(np.mean(y) - np.mean(x))
    assert low <= delta <= high  # the CI contains the estimate
    assert -1 <= low <= high <= 1


@FAST
@given(binary, hst.integers(0, 50), hst.integers(0, 50))
def test_adding_identical_items_keeps_b_and_c(pairs, both_right, both_wrong):
    x, y = _split(pairs)
    x2 = np.concatenate([x, np.ones(both_right), np.zeros(both_wrong)])
    y2 = np.concatenate([y, np.ones(both_right), np.zeros(both_wrong)])
    assert stats.discordant_counts(x2, y2) == stats.discordant_counts(x, y)
    # ... and the permutation test of the same data only sees the discordant items.
    assert stats.paired_permutation_test(x2, y2, seed=1) == stats.paired_permutation_test(
        x, y, seed=1)


@FAST
@given(continuous, seeds)
def test_continuous_swap_keeps_p_and_bounds_hold(pairs, seed):
    x, y = _split(pairs)
    p = stats.paired_permutation_test(x, y, resamples=2_000, seed=seed)
    assert 0 < p <= 1
    assert p == stats.paired_permutation_test(y, x, resamples=2_000, seed=seed)
    if np.all(x == y):
        assert p == 1.0


@FAST
@given(continuous, seeds)
def test_bootstrap_ci_contains_the_estimate_and_is_deterministic(pairs, seed):
    x, y = _split(pairs)
    low, high = stats.paired_bootstrap_ci(x, y, resamples=2_000, seed=seed)
    delta = float(np.mean(y - x))
    assert low - 1e-12 <= delta <= high + 1e-12
    assert (low, high) == stats.paired_bootstrap_ci(x, y, resamples=2_000, seed=seed)
    neg = stats.paired_bootstrap_ci(y, x, resamples=2_000, seed=seed)
    # Same resamples, mirrored differences (up to the quantile interpolation's round-off).
    assert neg == (approx(-high, abs=1e-12), approx(-low, abs=1e-12))


@FAST
@given(hst.lists(hst.floats(0, 1), min_size=1, max_size=12))
def test_holm_is_bounded_monotone_and_at_least_the_raw_p(pvalues):
    p = np.array(pvalues)
    adjusted = stats.holm(p)
    assert np.all((adjusted >= p - 1e-15) & (adjusted <= 1))
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= 0)
