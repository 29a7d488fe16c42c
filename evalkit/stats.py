"""Statistics for paired base-vs-tuned comparisons.

Everything here works on *per-item* values: one number per benchmark item (doc). When an item
has several samples, the samples are reduced to one value per item first (their mean, or the
unbiased pass@k estimate), so the item is the unit of resampling and testing. That is what
"clustered by item" means throughout: samples of one item are never split across resamples,
and standard errors are computed over items, not samples.

Distributions come from scipy; only the bootstrap loop is written here, because vectorising it
over items x resamples (and over many datasets at once in the coverage test) is what makes it
fast enough for 1,319 items x 10,000 resamples. scipy.stats is imported inside the tests that
need it: it costs ~0.6 s, which `evalkit check` and `--help` should not pay.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_RESAMPLES = 10_000
SeedLike = int | np.random.Generator | None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one item from ``n`` samples of which ``c`` passed.

    ``1 - C(n-c, k) / C(n, k)``, computed as ``1 - prod(1 - k / arange(n-c+1, n+1))`` so it never
    forms huge binomials; 1.0 when ``n - c < k`` (every k-subset contains a pass).
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k is only defined for 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def cluster_means(values: ArrayLike, clusters: ArrayLike) -> np.ndarray:
    """Mean of ``values`` within each cluster (item), in order of first appearance."""
    v = np.asarray(values, dtype=float)
    keys = np.asarray(clusters)
    if v.shape != keys.shape or v.ndim != 1:
        raise ValueError("values and clusters must be 1-d arrays of the same length")
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=v)
    counts = np.bincount(inverse)
    # np.unique sorts the keys; put clusters back in order of first appearance so that a
    # paired caller gets base and tuned items aligned the same way.
    order = np.argsort(first, kind="stable")
    return (sums / counts)[order]


def clustered_sem(values: ArrayLike, clusters: ArrayLike | None = None) -> float:
    """Standard error of the mean, clustered by item: per-item means first, then sd/sqrt(n).

    NaN when fewer than two items (no spread to estimate).
    """
    v = np.asarray(values, dtype=float)
    items = cluster_means(v, clusters) if clusters is not None else v
    if items.size < 2:
        return float("nan")
    return float(items.std(ddof=1) / np.sqrt(items.size))


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap_means(values: ArrayLike, *, resamples: int = DEFAULT_RESAMPLES,
                    seed: SeedLike = 0, chunk: int = 1_000) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of the items on the last axis.

    ``values`` is ``(n,)`` or ``(m, n)`` (m independent datasets of n items, which share the
    resampled index sets; each dataset on its own is still an ordinary bootstrap). Returns
    ``(resamples,)`` or ``(resamples, m)``.

    A resample is stored as item counts and applied with one matrix product, so memory is
    ``chunk x n`` and the work is a BLAS call instead of a Python loop.
    """
    d = np.asarray(values, dtype=float)
    if d.ndim not in (1, 2) or d.shape[-1] == 0:
        raise ValueError("bootstrap needs a non-empty (n,) or (m, n) array")
    n = d.shape[-1]
    rng = _rng(seed)
    out = np.empty((resamples, *d.shape[:-1]))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        # Row r of `counts` says how often each item was drawn in resample r.
        flat = (idx + (np.arange(size) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=size * n).reshape(size, n)
        out[start:start + size] = (counts @ d.T) / n
    return out


def bootstrap_ci(values: ArrayLike, *, resamples: int = DEFAULT_RESAMPLES,
                 confidence: float = 0.95, seed: SeedLike = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the mean over the last axis (vectorised over datasets).

    Returns ``(low, high)`` with the shape of ``values`` minus its last axis. A dataset whose
    items are all equal gets the degenerate interval ``[mean, mean]``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    means = bootstrap_means(values, resamples=resamples, seed=seed)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail], axis=0)
    return low, high


def paired_bootstrap_ci(base: ArrayLike, tuned: ArrayLike, *, clusters: ArrayLike | None = None,
                        resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                        seed: SeedLike = 0) -> tuple[float, float]:
    """Paired bootstrap CI of ``mean(tuned - base)``, resampling items.

    ``base[i]`` and ``tuned[i]`` belong to the same item (or the same sample of it). With
    ``clusters`` (one item id per entry) the entries are sample-level and are first averaged
    per item, so all samples of an item move together in every resample.
    """
    b = np.asarray(base, dtype=float)
    t = np.asarray(tuned, dtype=float)
    if b.shape != t.shape or b.ndim != 1:
        raise ValueError("base and tuned must be 1-d arrays of the same length (paired)")
    d = t - b
    if clusters is not None:
        d = cluster_means(d, clusters)
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    low, high = bootstrap_ci(d, resamples=resamples, confidence=confidence, seed=seed)
    return float(low), float(high)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    ``b`` = items only base got right, ``c`` = items only tuned got right. Under no change each
    discordant item is a fair coin, so this is a binomial test of b out of b + c at 1/2.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


def discordant_counts(base: ArrayLike, tuned: ArrayLike) -> tuple[int, int]:
    """``(b, c)`` for paired 0/1 outcomes: b = base 1 / tuned 0, c = base 0 / tuned 1."""
    x = np.asarray(base, dtype=float)
    y = np.asarray(tuned, dtype=float)
    return int(np.sum((x == 1) & (y == 0))), int(np.sum((x == 0) & (y == 1)))


def paired_permutation_test(base: ArrayLike, tuned: ArrayLike, *,
                            resamples: int = DEFAULT_RESAMPLES, seed: SeedLike = 0) -> float:
    """Two-sided sign-flip permutation test of ``mean(tuned - base) == 0``.

    Under no change the sign of each item's difference is exchangeable. scipy enumerates all
    2**n sign patterns when that is at most ``resamples``, else draws ``resamples`` of them
    (and counts the observed one, so p is never 0).
    """
    d = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    if d.ndim != 1:
        raise ValueError("base and tuned must be 1-d arrays of the same length (paired)")
    d = d[d != 0]  # zero differences are unchanged by any sign flip
    if d.size == 0:
        return 1.0
    from scipy.stats import permutation_test

    res = permutation_test(
        (d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
        vectorized=True, n_resamples=resamples, batch=1_000, alternative="two-sided",
        rng=_rng(seed),
    )
    return float(min(1.0, res.pvalue))


def wilcoxon_signed_rank(base: ArrayLike, tuned: ArrayLike) -> float:
    """Two-sided Wilcoxon signed-rank p-value for paired continuous values (zeros dropped)."""
    d = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    if d.ndim != 1:
        raise ValueError("base and tuned must be 1-d arrays of the same length (paired)")
    if not np.any(d != 0):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control under any dependence).

    Sorted ascending, the j-th smallest (j = 0..m-1) becomes ``max over i <= j of
    (m - i) * p_(i)``, capped at 1. Rejecting where the adjusted p < alpha is Holm's procedure
    at level alpha. NaN entries (untested rows) stay NaN and do not count towards m.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError("holm expects a 1-d vector of p-values")
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    if np.any((q < 0) | (q > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = q.size
    order = np.argsort(q, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    out[ok] = adjusted
    return out


ContinuousTest = Literal["permutation", "wilcoxon"]


def is_binary(*arrays: ArrayLike) -> bool:
    """True when every value is exactly 0 or 1 (McNemar applies)."""
    return all(np.isin(np.asarray(a, dtype=float), (0.0, 1.0)).all() for a in arrays)
