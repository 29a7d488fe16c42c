"""`evalkit analyze` end to end on tiny float64 checkpoints holding the analyzers.md oracles."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from oracles import DIAG64, intruder_models, oracle_a, run_cli, tall_base, write_model


def _analyze(tmp_path, base, tuned, *args, out="out"):
    out = tmp_path / out
    code = run_cli("analyze", base, tuned, "--dtype", "float64", "--out", out, "--quiet", *args)
    assert code == 0
    df = pd.read_parquet(out / "matrices.parquet").set_index("name")
    return df, json.loads((out / "summary.json").read_text()), out


def test_intruder_oracles_through_the_cli(tmp_path):
    base, tuned, ex = intruder_models(tmp_path)
    df, summary, out = _analyze(tmp_path, base, tuned)
    n = ex["names"]
    assert df.loc[n["A"], "max_cos_1"] == pytest.approx(0.17717, abs=5e-6)
    assert df.loc[n["B"], "max_cos_1"] == pytest.approx(ex["b_cos"], abs=1e-9)
    assert df.loc[n["B"], "sigma_1"] == pytest.approx(ex["b_sigma"], rel=1e-10)
    assert df.loc[n["B15"], "max_cos_1"] == pytest.approx(ex["b15_cos"], abs=1e-9)
    assert df.loc[n["C"], "max_cos_1"] == pytest.approx(1.0, abs=1e-12)
    counts = {key: int(df.loc[name, "intruders"]) for key, name in n.items()}
    assert counts == {"A": 1, "B": 1, "B15": 0, "C": 0, "D": 3, "noise": 0}
    assert summary["intruders_total"] == 5
    assert summary["matrices_with_intruders"] == 3

    # The ε curve from closed forms: every non-planted top-10 vector has |cos| ≈ 1.
    _, _, _, s = tall_base()
    d_cos = [s[i] / math.hypot(s[i], lam) for i, lam in enumerate((300.0, 200.0, 100.0))]
    planted = [0.17717, ex["b_cos"], ex["b15_cos"], *d_cos]
    expected = {f"{e:.1f}": sum(c < e for c in planted) for e in np.arange(1, 10) / 10}
    assert summary["intruder_curve"] == expected

    skipped = {s["name"]: s["reason"] for s in summary["skipped"]}
    assert skipped == {"model.embed_tokens.weight":
                       "embedding / LM head (pass --include-embeddings)",
                       "model.layers.0.input_layernorm.weight": "not 2-D (1-D)"}
    assert summary["heatmap"] == n["D"]
    for f in summary["files"].values():
        assert (out / f).stat().st_size > 0
    assert set(pd.read_csv(out / "matrices.csv")["name"]) == set(n.values())
    assert len(pd.read_parquet(out / "layers.parquet")) == 6


@pytest.mark.parametrize(("epsilon", "count"),
                         [(0.1, 0), (0.17, 0), (0.18, 1), (0.2, 1), (0.5, 1), (0.9, 1)])
def test_oracle_a_count_at_each_epsilon(tmp_path, epsilon, count):
    w_b, w_t = oracle_a()
    name = "model.layers.0.self_attn.q_proj.weight"
    base = write_model(tmp_path / "a-base", {name: w_b})
    tuned = write_model(tmp_path / "a-tuned", {name: w_t})
    _, summary, _ = _analyze(tmp_path, base, tuned, "--epsilon", epsilon)
    assert summary["intruders_total"] == count


def test_spectral_oracles_through_the_cli(tmp_path):
    rng = np.random.default_rng(3)
    deltas = {  # ΔW → (effective rank, stable rank, energy rank)
        "model.layers.0.self_attn.q_proj.weight": (np.eye(4), 4.0, 4.0, 4),
        "model.layers.1.self_attn.q_proj.weight":
            (3 * np.outer([1, 0, 0, 0], [0, 0.6, 0.8, 0]), 1.0, 1.0, 1),
        "model.layers.2.self_attn.q_proj.weight": (np.diag([2.0, 1, 1]), 2**1.5, 1.5, 3),
        "model.layers.3.self_attn.q_proj.weight": (np.diag([4.0, 3]), 1.979626, 1.5625, 2),
    }
    bases = {k: rng.standard_normal(v[0].shape) for k, v in deltas.items()}
    base = write_model(tmp_path / "s-base", bases)
    tuned = write_model(tmp_path / "s-tuned", {k: bases[k] + v[0] for k, v in deltas.items()})
    df, summary, _ = _analyze(tmp_path, base, tuned)
    for name, (d, eff, stable, energy) in deltas.items():
        assert df.loc[name, "effective_rank"] == pytest.approx(eff, abs=1e-6)
        assert df.loc[name, "stable_rank"] == pytest.approx(stable, abs=1e-9)
        assert df.loc[name, "energy_rank"] == energy
        rel = np.linalg.norm(d) / np.linalg.norm(bases[name])
        assert df.loc[name, "rel_update"] == pytest.approx(rel, rel=1e-9)
    model_rel = (math.sqrt(sum(np.linalg.norm(v[0]) ** 2 for v in deltas.values()))
                 / math.sqrt(sum(np.linalg.norm(b) ** 2 for b in bases.values())))
    assert summary["rel_update"] == pytest.approx(model_rel, rel=1e-9)


def test_principal_angles_through_the_cli(tmp_path):
    # W_b's top-2 left vectors are e1, e2; W_t's are e1, (e2+e3)/√2 (same right vectors, σ).
    n = 6
    s = np.array([10.0, 9.0, 1.0, 0.9, 0.8, 0.7])
    x_t = np.eye(n)
    x_t[:, 1] = (np.eye(n)[1] + np.eye(n)[2]) / math.sqrt(2)
    x_t[:, 2] = (np.eye(n)[1] - np.eye(n)[2]) / math.sqrt(2)
    name = "model.layers.0.self_attn.o_proj.weight"
    base = write_model(tmp_path / "p-base", {name: np.diag(s)})
    tuned = write_model(tmp_path / "p-tuned", {name: x_t @ np.diag(s)})
    df, summary, _ = _analyze(tmp_path, base, tuned, "--k", 2)
    assert df.loc[name, "subspace_sim"] == pytest.approx(0.75, abs=1e-9)
    assert df.loc[name, "max_angle_deg"] == pytest.approx(45.0, abs=1e-6)
    assert df.loc[name, "max_cos_2"] == pytest.approx(1 / math.sqrt(2), abs=1e-9)
    assert summary["intruder_curve"]["0.7"] == 0 and summary["intruder_curve"]["0.8"] == 1


def test_every_skipped_tensor_is_listed_with_its_reason(tmp_path):
    q = "model.layers.0.self_attn.q_proj.weight"
    v = "model.layers.0.self_attn.v_proj.weight"
    common = {q: DIAG64, v: DIAG64, "model.norm.weight": np.ones(64),
              "model.layers.0.mlp.router.scale": np.ones((2, 2, 2)),
              "lm_head.weight": np.ones((8, 64)), "model.proj_out.weight": np.ones((4, 64))}
    up = "model.layers.1.mlp.up_proj.weight"
    base = write_model(tmp_path / "k-base", {**common, "only_base.weight": np.ones((2, 2)),
                                             up: np.ones((4, 4))})
    tuned = write_model(tmp_path / "k-tuned", {**common, q: DIAG64 * 1.01, up: np.ones((4, 5))})
    df, summary, out = _analyze(tmp_path, base, tuned, "--modules", "q_proj")
    reasons = {s["name"]: s["reason"] for s in summary["skipped"]}
    assert list(df.index) == [q]
    assert reasons == {
        v: "not in --modules",
        "model.norm.weight": "not 2-D (1-D)",
        "model.layers.0.mlp.router.scale": "not 2-D (3-D)",
        "lm_head.weight": "embedding / LM head (pass --include-embeddings)",
        "model.proj_out.weight": "outside the transformer blocks",
        "only_base.weight": "only in BASE",
        up: "shape mismatch: BASE [4, 4] vs TUNED [4, 5]",
    }
    assert len(pd.read_csv(out / "skipped.csv")) == len(reasons)
    # --include-embeddings brings the head in; an unchanged matrix reports zero movement.
    df2, _, _ = _analyze(tmp_path, base, tuned, "--include-embeddings", out="out2")
    assert set(df2.index) == {q, v, "lm_head.weight"}
    assert df2.loc[v, "rel_update"] == 0 and df2.loc[v, "intruders"] == 0


def test_base_svd_cache_is_reused_across_fine_tunes(tmp_path, isolated_svd_cache):
    base, tuned, ex = intruder_models(tmp_path)
    _, first, _ = _analyze(tmp_path, base, tuned, out="o1")
    assert (first["cache"]["hits"], first["cache"]["misses"]) == (0, 6)
    fp = first["base"]["fingerprint"]
    assert len(list((isolated_svd_cache / fp / "float64").glob("*.safetensors"))) == 6
    # A second fine-tune of the same base: every base SVD comes from the cache.
    other = write_model(tmp_path / "other-tuned", {
        name: pair[1] * 1.001 for name, pair in zip(ex["names"].values(), ex["pairs"].values(),
                                                    strict=True)})
    _, second, _ = _analyze(tmp_path, base, other, out="o2")
    assert (second["cache"]["hits"], second["cache"]["misses"]) == (6, 0)
    df_cached, third, _ = _analyze(tmp_path, base, tuned, out="o3")
    df_fresh, _, _ = _analyze(tmp_path, base, tuned, "--no-cache", out="o4")
    assert third["intruders_total"] == first["intruders_total"]
    pd.testing.assert_frame_equal(df_cached, df_fresh)


def test_spectra_only_matches_the_full_pass(tmp_path):
    base, tuned, _ = intruder_models(tmp_path)
    full, _, _ = _analyze(tmp_path, base, tuned, out="full")
    quick, summary, out = _analyze(tmp_path, base, tuned, "--spectra-only", out="quick")
    assert summary["intruders_total"] is None and summary["cache"]["misses"] == 0
    for col in ("rel_update", "effective_rank", "stable_rank", "energy_rank"):
        pd.testing.assert_series_equal(full[col], quick[col])
    assert "intruders" not in quick.columns
    assert not (out / "intruders_vs_epsilon.png").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["/nonexistent/model"], "checkpoint not found"),
    (["{tuned}", "--device", "cuda"], "CUDA"),
    (["{tuned}", "--heatmap", "nope"], "--heatmap"),
    (["{tuned}", "--k", "0"], "--k"),
    (["{tuned}", "--modules", "nothing_matches"], "no matrix to analyse"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    base, tuned, _ = intruder_models(tmp_path)
    args = [a.format(tuned=tuned) for a in args]
    assert run_cli("analyze", base, *args, "--out", tmp_path / "o", "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_sharded_checkpoint_reads_the_shards_its_index_names(tmp_path):
    import torch
    from safetensors.torch import save_file

    def sharded(folder, scale):
        folder.mkdir()
        q, v = "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight"
        shard1, shard2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
        save_file({q: torch.tensor(DIAG64 * scale)}, str(folder / shard1))
        save_file({v: torch.tensor(DIAG64)}, str(folder / shard2))
        # same weights under another naming, as some hub folders ship them: must be ignored
        save_file({"layers.0.attention.wq.weight": torch.tensor(DIAG64)},
                  str(folder / "consolidated.safetensors"))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
            q: shard1, v: shard2}}))
        (folder / "config.json").write_text("{}")
        return folder

    df, summary, _ = _analyze(tmp_path, sharded(tmp_path / "b", 1.0), sharded(tmp_path / "t", 1.1))
    assert sorted(df.index) == ["model.layers.0.self_attn.q_proj.weight",
                                "model.layers.1.self_attn.v_proj.weight"]
    assert summary["skipped"] == []
    assert df.loc["model.layers.0.self_attn.q_proj.weight", "rel_update"] == pytest.approx(0.1)
