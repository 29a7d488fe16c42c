"""The formulas of analyzers.md on their oracles (pure functions, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracles import oracle_a, oracle_b, oracle_c, oracle_d, oracle_noise

from evalkit.analysis import edit, intruders, spectral, tuco

T = torch.tensor


def _max_cos(w_b: np.ndarray, w_t: np.ndarray, k: int = 10) -> list[float]:
    u_b, _ = spectral.thin_svd(torch.from_numpy(w_b), torch.float64)
    u_t, _, _ = spectral.top_singular(torch.from_numpy(w_t), k)
    return intruders.max_abs_cos(u_b, u_t).tolist()


# ------------------------------------------------------------------ spectral summaries


@pytest.mark.parametrize(("sigma", "expected"), [
    ([1.0, 1.0, 1.0, 1.0], 4.0),         # I₄
    ([5.0, 0.0, 0.0], 1.0),              # rank 1 (zeros ignored)
    ([2.0, 1.0, 1.0], 2**1.5),           # 2.828427
    ([4.0, 3.0], 1.979626),
])
def test_effective_rank_oracles(sigma, expected):
    assert spectral.effective_rank(T(sigma, dtype=torch.float64)) == pytest.approx(expected,
                                                                                   abs=1e-6)


def test_stable_rank_oracle():
    assert spectral.stable_rank(T([4.0, 3.0], dtype=torch.float64)) == pytest.approx(1.5625)


def test_energy_rank():
    s = T([4.0, 3.0], dtype=torch.float64)  # energies 16, 9: 16 < 22.5 ≤ 25
    assert spectral.energy_rank(s) == 2
    assert spectral.energy_rank(T([10.0, 1.0, 1.0], dtype=torch.float64)) == 1  # 100/102 ≥ 0.9
    assert spectral.energy_rank(T([3.0, 1.0, 1.0, 1.0], dtype=torch.float64)) == 3  # 11/12
    assert spectral.energy_rank(torch.zeros(3, dtype=torch.float64)) == 0


def test_principal_angles_oracle():
    e = torch.eye(3, dtype=torch.float64)
    q_b = e[:, :2]
    q_t = torch.stack([e[:, 0], (e[:, 1] + e[:, 2]) / math.sqrt(2)], dim=1)
    cos = spectral.principal_cosines(q_b, q_t)
    assert cos.tolist() == pytest.approx([1.0, 1 / math.sqrt(2)], abs=1e-12)
    assert spectral.principal_angles_deg(cos).tolist() == pytest.approx([0.0, 45.0], abs=1e-6)
    assert spectral.subspace_similarity(q_b, q_t) == pytest.approx(0.75, abs=1e-12)


@pytest.mark.parametrize("block", [7, 8192])
def test_gram_singular_values_match_svd(monkeypatch, block):
    monkeypatch.setattr(spectral, "_BLOCK", block)
    g = torch.Generator().manual_seed(0)
    for shape in [(40, 25), (25, 40), (30, 30)]:
        w = torch.randn(*shape, generator=g, dtype=torch.float64)
        w[:, 0] *= 100  # spread the spectrum
        exact = torch.linalg.svdvals(w)
        assert torch.allclose(spectral.singular_values(w), exact, rtol=0, atol=1e-9 * exact[0])
    low_rank = torch.randn(50, 3, dtype=torch.float64) @ torch.randn(3, 40, dtype=torch.float64)
    s = spectral.singular_values(low_rank)
    assert int((s > 0).sum()) == 3  # round-off below eps·λ₁ is exactly zero


@pytest.mark.parametrize("block", [7, 8192])  # 7: the float64 work runs in many row blocks
def test_top_singular_matches_svd(monkeypatch, block):
    monkeypatch.setattr(spectral, "_BLOCK", block)
    w = torch.from_numpy(oracle_b(20.0)[1])  # tall
    for m in (w, w.T.contiguous()):          # and wide
        u, s, v = spectral.top_singular(m, 5)
        u_ref, s_ref, _ = torch.linalg.svd(m, full_matrices=False)
        assert torch.allclose(s, s_ref[:5], atol=1e-10)
        assert torch.allclose((u * u_ref[:, :5]).sum(0).abs(), torch.ones(5, dtype=m.dtype),
                              atol=1e-10)
        assert torch.allclose(m @ v, u * s, atol=1e-9)  # (u, σ, v) is a singular triplet


def test_noise_floor_bf16_is_about_two_tenths_of_a_percent():
    assert spectral.noise_floor("BF16") == pytest.approx(0.00226, abs=1e-5)
    assert math.isnan(spectral.noise_floor("I64"))


# ----------------------------------------------------------------------------- intruders


def test_oracle_a_counts_by_epsilon():
    s = _max_cos(*oracle_a())
    assert s[0] == pytest.approx(0.17717, abs=5e-6)
    for eps in (0.18, 0.2, 0.5, 0.9):
        assert intruders.count(s, eps) == 1, eps
    for eps in (0.1, 0.17):
        assert intruders.count(s, eps) == 0, eps


@pytest.mark.parametrize("lam", [20.0, 15.0])
def test_oracle_b_closed_form(lam):
    w_b, w_t, expected_cos, expected_sigma = oracle_b(lam)
    _, s_t, _ = spectral.top_singular(torch.from_numpy(w_t), 10)
    assert float(s_t[0]) == pytest.approx(expected_sigma, rel=1e-10)
    s = _max_cos(w_b, w_t)
    assert s[0] == pytest.approx(expected_cos, abs=1e-9)
    # intruder at ε = 0.5 iff λ > √3·s_j (s_j = 9.129: 20 is, 15 is not)
    assert intruders.count(s, 0.5) == (1 if lam > math.sqrt(3) * 9.129 else 0)


def test_oracle_c_boosted_smallest_direction_is_no_intruder():
    s = _max_cos(*oracle_c())
    assert s[0] == pytest.approx(1.0, abs=1e-12)
    assert intruders.count(s, 0.5) == 0


def test_oracle_d_three_planted():
    s = _max_cos(*oracle_d())
    assert intruders.count(s, 0.5) == 3
    assert intruders.top_intruder(s, 0.5) == 0


def test_small_noise_has_no_intruders():
    assert intruders.count(_max_cos(*oracle_noise()), 0.5) == 0


def test_curve_is_counts_over_the_grid():
    s = [0.05, 0.35, 0.95]
    assert intruders.curve(s) == {0.1: 1, 0.2: 1, 0.3: 1, 0.4: 2, 0.5: 2, 0.6: 2, 0.7: 2,
                                  0.8: 2, 0.9: 2}


# ------------------------------------------------------------------------ edits, TuCo


def test_lines_lambda_oracle():
    assert edit.lines_lambda(0, 32, 0.2, 0.8) == pytest.approx(0.2)
    assert edit.lines_lambda(15, 32, 0.2, 0.8) == pytest.approx(0.587097, abs=1e-6)
    assert edit.lines_lambda(31, 32, 0.2, 0.8) == pytest.approx(1.0)
    assert edit.lines_lambda(None, 32, 0.2, 0.8) == pytest.approx(0.2)


def test_graft_mask_oracle():
    delta = T([0.1, -5.0, 0.01, 3.0])
    thr = edit.graft_threshold(iter([delta.abs()]), keep=2)
    mask = edit.graft_mask(delta, thr)
    assert mask.nonzero().flatten().tolist() == [1, 3]
    assert (mask * delta).tolist() == [0.0, -5.0, 0.0, 3.0]


def test_graft_threshold_is_global_across_tensors():
    parts = [T([0.1, -5.0]), T([0.01, 3.0, 0.2])]
    thr = edit.graft_threshold((p.abs() for p in parts), keep=3)
    assert thr == pytest.approx(0.2)


def test_scale_direction_changes_one_singular_value():
    _, w_t, _, sigma = oracle_b(20.0)
    w = torch.from_numpy(w_t)
    u, s, v = spectral.top_singular(w, 1)
    new = edit.scale_direction(w, u[:, 0], float(s[0]), v[:, 0], 0.5)
    before, after = torch.linalg.svdvals(w), torch.linalg.svdvals(new)
    expected = torch.sort(torch.cat([before[1:], T([0.5 * sigma], dtype=torch.float64)]),
                          descending=True).values
    assert torch.allclose(after, expected, atol=1e-9)


def test_tuco_paper_four_layer_example():
    h = T([1.0, -2.0, 0.5], dtype=torch.float64)
    z = torch.zeros(3, dtype=torch.float64)
    ptc = torch.stack([z, z, h, -h / 2])
    ftc = torch.stack([h, -h / 2, z, z])
    assert tuco.tuco_from_contributions(ptc, ftc) == pytest.approx(0.5, abs=1e-15)


def test_tuco_extremes():
    h = torch.ones(1, 4, dtype=torch.float64)
    assert tuco.tuco_from_contributions(h, torch.zeros_like(h)) == 0.0
    assert tuco.tuco_from_contributions(torch.zeros_like(h), h) == 1.0
