"""evalkit.stats against textbook cases and independent oracles (enumeration, closed forms)."""

from __future__ import annotations

import itertools
import math
import time
from fractions import Fraction

import numpy as np
import pytest

from evalkit import stats

# ------------------------------------------------------------------------------------- pass@k


def test_pass_at_k_closed_form_by_hand():
    # n=5, c=2: pass@k = 1 - C(3,k)/C(5,k): 1-3/5, 1-3/10, 1-1/10, then C(3,4)=0 -> 1.
    expected = {1: 0.4, 2: 0.7, 3: 0.9, 4: 1.0, 5: 1.0}
    for k, value in expected.items():
        assert stats.pass_at_k(5, 2, k) == pytest.approx(value, abs=1e-12)


def test_pass_at_k_matches_exact_binomials():
    for n in range(1, 25):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert stats.pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)


def test_pass_at_k_large_n_is_stable():
    # C(200, 100) overflows floats; the product form must not.
    assert stats.pass_at_k(200, 0, 100) == 0.0
    assert stats.pass_at_k(200, 1, 1) == pytest.approx(1 / 200)
    assert stats.pass_at_k(200, 1, 100) == pytest.approx(0.5)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 2, 0), (5, 2, 6), (5, 6, 1), (5, -1, 1)])
def test_pass_at_k_rejects_undefined_inputs(n, c, k):
    with pytest.raises(ValueError):
        stats.pass_at_k(n, c, k)


# ----------------------------------------------------------------------------------- McNemar


def test_mcnemar_exact_textbook_case():
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, airway
    # hyper-responsiveness example: discordant pairs n12 = 1, n21 = 7, exact conditional
    # McNemar p = 0.070. Exactly: 2 * P(X <= 1 | Bin(8, 1/2)) = 2 * 9/256.
    p = stats.mcnemar_exact(1, 7)
    assert round(p, 3) == 0.070
    assert p == pytest.approx(18 / 256, rel=1e-12)


def test_mcnemar_exact_by_hand_and_symmetry():
    # b=2, c=8: 2 * (C(10,0)+C(10,1)+C(10,2)) / 2**10 = 112/1024.
    assert stats.mcnemar_exact(2, 8) == pytest.approx(112 / 1024, rel=1e-12)
    assert stats.mcnemar_exact(8, 2) == stats.mcnemar_exact(2, 8)
    assert stats.mcnemar_exact(5, 5) == 1.0
    assert stats.mcnemar_exact(0, 0) == 1.0
    # 0 vs 6 discordant: 2 / 2**6.
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_discordant_counts_from_a_2x2_table():
    # 2x2 table: both right 3, base only 2, tuned only 4, both wrong 1.
    base = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    tuned = [1, 1, 1, 0, 0, 1, 1, 1, 1, 0]
    assert stats.discordant_counts(base, tuned) == (2, 4)


# -------------------------------------------------------------------------------------- Holm


def test_holm_known_vector():
    # Sorted: .005 .01 .03 .04 -> x4, x3, x2, x1 = .02 .03 .06 .04 -> monotone .02 .03 .06 .06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], atol=1e-12)


def test_holm_caps_at_one_and_skips_untested_rows():
    adjusted = stats.holm([0.5, np.nan, 0.2, 0.01])
    # m = 3 tested: .01*3=.03, .2*2=.4, .5*1=.5
    np.testing.assert_allclose(adjusted[[0, 2, 3]], [0.5, 0.4, 0.03], atol=1e-12)
    assert np.isnan(adjusted[1])
    assert stats.holm([0.6, 0.7]).tolist() == [1.0, 1.0]


def _holm_procedure_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm (1979) as a sequential procedure: reject in order until p_(j) > alpha/(m-j)."""
    m = len(p)
    rejected = np.zeros(m, dtype=bool)
    for j, i in enumerate(np.argsort(p)):
        if p[i] > alpha / (m - j):
            break
        rejected[i] = True
    return rejected


def test_holm_adjusted_p_agrees_with_the_sequential_procedure():
    rng = np.random.default_rng(7)
    for _ in range(500):
        m = int(rng.integers(1, 12))
        p = rng.uniform(0, 0.2, size=m) ** rng.uniform(0.5, 3)
        for alpha in (0.01, 0.05, 0.1):
            assert ((stats.holm(p) <= alpha) == _holm_procedure_rejects(p, alpha)).all()


# --------------------------------------------------------------------------------- bootstrap


def _simulate_paired_binary(rng, m, n, cells):
    """m datasets of n items; each item falls in (both right, base only, tuned only, both
    wrong) with probabilities ``cells``. True Δ = P(tuned only) - P(base only)."""
    cat = rng.choice(4, size=(m, n), p=cells)
    base = np.isin(cat, (0, 1)).astype(float)
    tuned = np.isin(cat, (0, 2)).astype(float)
    return base, tuned


def test_bootstrap_ci_covers_true_delta_in_at_least_93_percent_of_1000_datasets():
    rng = np.random.default_rng(20240601)
    cells = (0.30, 0.10, 0.15, 0.45)
    true_delta = cells[2] - cells[1]
    base, tuned = _simulate_paired_binary(rng, 1_000, 200, cells)
    covered, widths = [], []
    for chunk in range(4):  # 250 datasets at a time keeps memory at ~20 MB
        sl = slice(250 * chunk, 250 * (chunk + 1))
        low, high = stats.bootstrap_ci(tuned[sl] - base[sl], resamples=10_000, seed=chunk)
        covered.append((low <= true_delta) & (true_delta <= high))
        widths.append(high - low)
    coverage = np.concatenate(covered).mean()
    assert coverage >= 0.93
    # ...and not by being uselessly wide: the normal-theory width is 2*1.96*sd(d)/sqrt(n).
    var_d = cells[1] + cells[2] - true_delta**2
    assert np.concatenate(widths).mean() == pytest.approx(2 * 1.96 * np.sqrt(var_d / 200),
                                                          rel=0.05)


def test_bootstrap_ci_coverage_for_continuous_per_item_values():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, size=(1_000, 150))
    tuned = np.clip(base + rng.normal(0.02, 0.1, size=base.shape), 0, 1)
    # Clipping moves the true mean difference away from 0.02: get it from a huge sample.
    big = rng.uniform(0, 1, size=2_000_000)
    true_delta = float(np.mean(np.clip(big + rng.normal(0.02, 0.1, size=big.size), 0, 1) - big))
    low, high = stats.bootstrap_ci(tuned - base, resamples=5_000, seed=1)
    assert ((low <= true_delta) & (true_delta <= high)).mean() >= 0.93


def test_paired_bootstrap_ci_is_the_bootstrap_of_the_differences():
    rng = np.random.default_rng(0)
    base, tuned = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    low, high = stats.paired_bootstrap_ci(base, tuned, seed=5)
    ref_low, ref_high = stats.bootstrap_ci(tuned - base, seed=5)
    assert (low, high) == (float(ref_low), float(ref_high))
    assert low <= np.mean(tuned - base) <= high
    assert stats.paired_bootstrap_ci(base, tuned, seed=5) == (low, high)  # seeded
    assert stats.paired_bootstrap_ci(base, tuned, seed=6) != (low, high)


def test_bootstrap_clusters_samples_of_one_item():
    rng = np.random.default_rng(1)
    n_items, n_samples = 120, 10
    base_items = rng.uniform(0, 1, n_items)
    tuned_items = np.clip(base_items + rng.normal(0, 0.2, n_items), 0, 1)
    # Every item's 10 samples score the same: no new information, only copies.
    base = np.repeat(base_items, n_samples)
    tuned = np.repeat(tuned_items, n_samples)
    ids = np.repeat(np.arange(n_items), n_samples)
    clustered = stats.paired_bootstrap_ci(base, tuned, clusters=ids, seed=2)
    per_item = stats.paired_bootstrap_ci(base_items, tuned_items, seed=2)
    np.testing.assert_allclose(clustered, per_item, atol=1e-12)
    naive = stats.paired_bootstrap_ci(base, tuned, seed=2)  # treats copies as independent
    ratio = (per_item[1] - per_item[0]) / (naive[1] - naive[0])
    assert ratio == pytest.approx(np.sqrt(n_samples), rel=0.1)


def test_bootstrap_degenerate_and_invalid_inputs():
    assert stats.paired_bootstrap_ci([1, 0, 1], [1, 0, 1]) == (0.0, 0.0)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_ci([1, 0], [1, 0, 1])
    with pytest.raises(ValueError):
        stats.paired_bootstrap_ci([], [])
    with pytest.raises(ValueError):
        stats.paired_bootstrap_ci([1, 0], [0, 1], confidence=1.0)


def test_bootstrap_is_fast_for_gsm8k_size():
    rng = np.random.default_rng(0)
    base, tuned = rng.integers(0, 2, 1_319), rng.integers(0, 2, 1_319)
    started = time.perf_counter()
    stats.paired_bootstrap_ci(base, tuned, resamples=10_000)
    assert time.perf_counter() - started < 3.0  # ~0.2 s on one core; generous for shared CI


# --------------------------------------------------------------------------- clustered SEM


def test_clustered_sem_by_hand():
    # Items: [1, 0] -> .5, [1, 1] -> 1, [0, 0] -> 0; sd(.5, 1, 0) = .5; SEM = .5 / sqrt(3)
    values = [1, 0, 1, 1, 0, 0]
    items = ["a", "a", "b", "b", "c", "c"]
    assert stats.clustered_sem(values, items) == pytest.approx(0.5 / math.sqrt(3))
    # Unclustered the same six numbers look like six items: sd = sqrt(.3), SEM = sqrt(.3/6).
    assert stats.clustered_sem(values) == pytest.approx(math.sqrt(0.3 / 6))
    assert math.isnan(stats.clustered_sem([1.0]))


def test_cluster_means_keep_first_appearance_order():
    np.testing.assert_allclose(stats.cluster_means([1, 2, 3, 5], ["z", "a", "z", "a"]), [2, 3.5])


# ------------------------------------------------------------------------ continuous tests


def _sign_flip_p(d: list[float]) -> float:
    """Exact two-sided sign-flip p by enumerating all 2**n sign patterns."""
    observed = abs(sum(d))
    hits = total = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        total += 1
        hits += abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= observed - 1e-12
    return hits / total


@pytest.mark.parametrize("d", [[1, 2, 3], [1, -1, 2], [0.5, 0.25, -0.1, 0.8, 0.3, 0.9]])
def test_permutation_test_matches_enumeration(d):
    base = np.zeros(len(d))
    assert stats.paired_permutation_test(base, d) == pytest.approx(_sign_flip_p(d))


def test_permutation_test_randomized_is_seeded_and_sane():
    rng = np.random.default_rng(4)
    base = rng.uniform(0, 1, 400)
    shifted = np.clip(base + rng.normal(0.1, 0.1, 400), 0, 1)
    assert stats.paired_permutation_test(base, shifted, seed=1) < 0.001
    noise = base + rng.normal(0, 0.1, 400)
    p1 = stats.paired_permutation_test(base, noise, seed=1)
    assert p1 == stats.paired_permutation_test(base, noise, seed=1)
    assert stats.paired_permutation_test(base, base) == 1.0


def _wilcoxon_exact_p(d: list[float]) -> float:
    """Exact two-sided signed-rank p (no ties) by counting rank subsets with sum <= W."""
    n = len(d)
    ranks = {abs(x): r for r, x in enumerate(sorted(d, key=abs), start=1)}
    w_minus = sum(ranks[abs(x)] for x in d if x < 0)
    w_plus = n * (n + 1) // 2 - w_minus
    w = min(w_minus, w_plus)
    ways = [1] + [0] * (n * (n + 1) // 2)  # ways[s] = subsets of {1..n} with sum s
    for r in range(1, n + 1):
        for s in range(len(ways) - 1, r - 1, -1):
            ways[s] += ways[s - r]
    return min(1.0, 2 * sum(ways[: w + 1]) / 2**n)


def test_wilcoxon_on_darwins_zea_mays_data():
    # Darwin's cross- vs self-fertilised Zea mays height differences (eighths of an inch), the
    # classic signed-rank example: W- = 24, exact two-sided p ≈ 0.041.
    d = [49, -67, 8, 16, 6, 23, 28, 41, 14, 29, 56, 24, 75, 60, -48]
    p = stats.wilcoxon_signed_rank(np.zeros(len(d)), d)
    assert p == pytest.approx(_wilcoxon_exact_p(d), rel=1e-9)
    assert round(p, 3) == 0.041
    assert stats.wilcoxon_signed_rank([1, 2], [1, 2]) == 1.0


def test_is_binary():
    assert stats.is_binary([0, 1, 1.0], [0.0])
    assert not stats.is_binary([0, 1], [0.5])


# ------------------------------------------------- permutation test: every n, every m


def test_permutation_test_with_one_non_zero_difference():
    # scipy's permutation_test raised "each sample must contain two or more observations".
    assert stats.paired_permutation_test([0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0]) == 1.0
    assert stats.paired_permutation_test([0.5], [1.0]) == 1.0
    # Two items both +1: 2 of the 4 sign patterns reach |sum| = 2.
    assert stats.paired_permutation_test([0, 0, 0], [1.0, 1.0, 0]) == 0.5


def test_permutation_test_observed_zero_sum_gives_p_one_despite_round_off():
    # Thirds: in floats 1/3 + 1/3 - 2/3 is not 0 for every grouping; exactly it is.
    # Found by search: without the scaled tolerance this gives p = 0.92 (59 of 64 patterns).
    base = np.array([1, 1, 2, 2, 1, 0, 3, 2]) / 3
    tuned = np.array([0, 3, 2, 0, 2, 2, 0, 3]) / 3
    assert sum(Fraction(int(v), 3) for v in np.round(3 * (tuned - base))) == 0
    assert stats.paired_permutation_test(base, tuned) == 1.0
    many = np.tile(base, 50)  # 300 items, 300 non-zero differences: the Monte Carlo branch
    assert stats.paired_permutation_test(many, np.tile(tuned, 50)) == 1.0


def test_permutation_test_exact_enumeration_matches_brute_force_up_to_the_cutoff():
    rng = np.random.default_rng(11)
    for m in (2, 5, 9, stats.EXACT_MAX_NONZERO):
        d = rng.choice([-1, -0.5, 0.5, 1, 1 / 3], size=m)
        p = stats.paired_permutation_test(np.zeros(m), d)
        if m <= 12:
            assert p == pytest.approx(_sign_flip_p(list(d)), abs=1e-12)
        assert p * 2**m == pytest.approx(round(p * 2**m))  # a count over 2**m patterns


def test_permutation_test_monte_carlo_has_the_plus_one_correction():
    d = np.ones(40)  # every random pattern has |sum| < 40 except the all-plus/all-minus ones
    p = stats.paired_permutation_test(np.zeros(40), d, resamples=1_000, seed=3)
    assert p == pytest.approx(1 / 1_001)  # never 0: the observed pattern counts
    # Just above the exact cutoff the Monte Carlo p agrees with full enumeration within its
    # sampling error (2**17 patterns, enumerated here independently with itertools).
    rng = np.random.default_rng(5)
    m = stats.EXACT_MAX_NONZERO + 1
    d = rng.normal(0.3, 1, m)
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=m)))
    exact = float(np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-12))
    p = stats.paired_permutation_test(np.zeros(m), d, resamples=20_000, seed=2)
    assert abs(p - exact) < 4 * np.sqrt(exact * (1 - exact) / 20_000) + 1e-4
    assert p == stats.paired_permutation_test(np.zeros(m), d, resamples=20_000, seed=2)


def test_permutation_test_refuses_non_finite_values():
    with pytest.raises(ValueError, match="finite"):
        stats.paired_permutation_test([0.0, 1.0], [np.nan, 1.0])


# ------------------------------------------------------------------------- Holm boundary


def test_holm_rejects_at_p_adjusted_equal_to_alpha():
    from evalkit.compare.rows import verdict
    from evalkit.compare.schema import MetricRow

    adjusted = stats.holm([0.025, 0.5])
    assert adjusted[0] == 0.05  # 2 * 0.025, exact in binary floating point
    row = MetricRow(task="t", metric="acc", aggregation="mean", n_items=100, base=0.5,
                    tuned=0.4, delta=-0.1, p_value=0.025, p_holm=float(adjusted[0]))
    assert verdict(row, 0.05) == "regressed"  # Holm (1979) and statsmodels: p_adj <= alpha
    assert verdict(row, 0.0499) == "no significant change"
    # The sequential procedure agrees at the boundary: p_(1) = 0.025 <= 0.05 / 2.
    assert _holm_procedure_rejects(np.array([0.025, 0.5]), 0.05).tolist() == [True, False]


def test_conjugate_recovery_with_one_non_zero_difference_in_differences(tmp_path):
    # The audit's crash: exactly one item of the difference-in-differences is non-zero.
    from evalkit.compare.recovery import recovery
    from evalkit.compare.rows import compare_paths
    from evalkit.testing import make_run_folder

    items = {str(i): 1.0 for i in range(12)}
    lost = {**items, "0": 0.0}  # the tuned model loses item 0 on the plain prompt only
    for side, plain in (("base", items), ("tuned", lost)):
        make_run_folder(tmp_path / side / "plain", plain, task="plain", checkpoint=side)
        make_run_folder(tmp_path / side / "conj", items, task="conj", checkpoint=side)
    comparison = compare_paths(tmp_path / "base", tmp_path / "tuned")
    (row,) = recovery(comparison, pairs=[("plain", "conj")])
    assert row.recovery == pytest.approx(1 / 12) and row.p_value == 1.0
    assert row.verdict == "no significant forgetting"


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.1, 0.25])
def test_fewest_changes_to_reject_is_where_the_real_tests_first_can(alpha):
    # Every item moved the same way is the most extreme outcome both sign tests can see.
    fewest = stats.fewest_changes_to_reject(alpha)
    for m in range(1, 10):
        base, tuned = np.zeros(m + 2), np.r_[np.arange(1.0, m + 1), 0.0, 0.0]  # 2 unchanged
        p_perm = stats.paired_permutation_test(base, tuned)
        p_wilcoxon = stats.wilcoxon_signed_rank(base, tuned)
        assert p_perm == pytest.approx(p_wilcoxon) == pytest.approx(2 / 2**m)
        assert stats.sign_tests_can_reach(base, tuned, alpha) is (p_perm <= alpha) is (m >= fewest)
    assert stats.sign_tests_can_reach(np.ones(4), np.ones(4), alpha)  # nothing changed
