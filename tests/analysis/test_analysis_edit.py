"""`evalkit edit`: LiNeS, graft and intruder scaling write checkpoints that load and measure."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from oracles import intruder_models, make_tiny_llama, run_cli, write_model
from safetensors.torch import load_file

from evalkit.checkpoints import resolve


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_lines_through_the_cli_on_a_32_layer_model(tmp_path):
    import shutil

    from safetensors.torch import save_file

    base = make_tiny_llama(tmp_path / "base", seed=0, layers=32)
    tuned = shutil.copytree(base, tmp_path / "tuned")
    g = torch.Generator().manual_seed(1)  # a "fine-tune" that moves every parameter
    save_file({k: v + 0.01 * torch.randn(v.shape, generator=g)
               for k, v in _weights(base).items()}, str(tuned / "model.safetensors"),
              metadata={"format": "pt"})
    out = tmp_path / "lines"
    assert run_cli("edit", tuned, "--base", base, "--lines-alpha", 0.2, "--out", out,
                   "--quiet") == 0
    b, t, e = _weights(base), _weights(tuned), _weights(out)
    assert set(e) == set(t)
    expected = {  # analyzers.md §4 oracle: L = 32, α = 0.2
        "model.layers.0.mlp.down_proj.weight": 0.2,
        "model.layers.15.self_attn.q_proj.weight": 0.587097,
        "model.layers.15.input_layernorm.weight": 0.587097,
        "model.layers.31.mlp.up_proj.weight": 1.0,
        "model.embed_tokens.weight": 0.2,
        "model.norm.weight": 0.2,
        "lm_head.weight": 0.2,
    }
    for name, lam in expected.items():
        delta_t, delta_e = (t[name] - b[name]).double(), (e[name] - b[name]).double()
        assert delta_t.norm() > 0
        ratio = float((delta_e * delta_t).sum() / (delta_t * delta_t).sum())
        assert ratio == pytest.approx(lam, abs=1e-5), name
        assert torch.allclose(delta_e, lam * delta_t, atol=1e-6), name
    manifest = json.loads((out / "evalkit_edit.json").read_text())
    assert manifest["edit"] == "lines" and manifest["beta"] == pytest.approx(0.8)
    assert manifest["lambda_by_layer"]["15"] == pytest.approx(0.587097, abs=1e-6)
    # A plain model folder: resolves as a model and loads in transformers.
    from transformers import AutoModelForCausalLM

    assert resolve(str(out)).kind == "model"
    AutoModelForCausalLM.from_pretrained(out)


def test_graft_oracle_through_the_cli(tmp_path):
    name = "model.layers.0.mlp.down_proj.weight"
    base = write_model(tmp_path / "g-base", {name: np.zeros((1, 4))})
    tuned = write_model(tmp_path / "g-tuned", {name: np.array([[0.1, -5.0, 0.01, 3.0]])})
    out = tmp_path / "graft"
    assert run_cli("edit", tuned, "--base", base, "--graft-fraction", 0.5, "--out", out,
                   "--quiet") == 0
    assert _weights(out)[name].tolist() == [[0.0, -5.0, 0.0, 3.0]]
    manifest = json.loads((out / "evalkit_edit.json").read_text())
    assert manifest["kept"] == 2 and manifest["kept_by_layer"] == {"0": 2}
    assert manifest["kept_by_module"] == {"down_proj": 2}


def test_scale_intruders_through_the_cli(tmp_path):
    base, tuned, ex = intruder_models(tmp_path)
    out = tmp_path / "scaled"
    assert run_cli("edit", tuned, "--base", base, "--scale-intruders", 0.5, "--out", out,
                   "--dtype", "float64", "--quiet") == 0
    before, after = _weights(tuned), _weights(out)
    n = ex["names"]
    manifest = json.loads((out / "evalkit_edit.json").read_text())
    assert {e["name"] for e in manifest["edited"]} == {n["A"], n["B"], n["D"]}
    for key in ("B15", "C", "noise"):  # no intruder: bit-for-bit unchanged
        assert torch.equal(before[n[key]], after[n[key]]), key
    # B: the intruder's singular value halves, every other one stays.
    s_before = torch.linalg.svdvals(before[n["B"]])
    s_after = torch.linalg.svdvals(after[n["B"]])
    assert float(s_before[0]) == pytest.approx(ex["b_sigma"], rel=1e-10)
    expected = torch.sort(torch.cat([s_before[1:], 0.5 * s_before[:1]]), descending=True).values
    assert torch.allclose(s_after, expected, atol=1e-9)
    # D: only the top intruder of three is scaled (300-ish → 150-ish).
    d_before = torch.linalg.svdvals(before[n["D"]])[:3]
    d_after = torch.linalg.svdvals(after[n["D"]])[:3]
    assert float(d_after[0]) == pytest.approx(float(d_before[1]), rel=1e-12)  # 200 now leads
    assert float(d_after[1]) == pytest.approx(0.5 * float(d_before[0]), rel=1e-12)
    assert float(d_after[2]) == pytest.approx(float(d_before[2]), rel=1e-12)
    # compare-ready: analysing the edit against BASE still finds D's three directions.
    ana = tmp_path / "ana"
    assert run_cli("analyze", base, out, "--dtype", "float64", "--out", ana, "--quiet") == 0
    df = pd.read_parquet(ana / "matrices.parquet").set_index("name")
    assert int(df.loc[n["D"], "intruders"]) == 3
    assert df.loc[n["B"], "sigma_1"] == pytest.approx(max(0.5 * ex["b_sigma"], 10.0), rel=1e-9)


def test_lines_on_a_lora_adapter_scales_its_update(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = make_tiny_llama(tmp_path / "base", seed=0)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"],
                                     init_lora_weights=False)).save_pretrained(tmp_path / "ad")
    out = tmp_path / "lines"
    assert run_cli("edit", tmp_path / "ad", "--base", base, "--lines-alpha", 0.5, "--out", out,
                   "--quiet") == 0
    b, e = _weights(base), _weights(out)
    a = load_file(str(tmp_path / "ad" / "adapter_model.safetensors"))
    for layer, lam in ((0, 0.5), (1, 1.0)):  # L = 2: λ(0) = α, λ(1) = α + β = 1
        key = f"model.layers.{layer}.self_attn.q_proj"
        pre = f"base_model.model.{key}"
        delta = (a[f"{pre}.lora_B.weight"] @ a[f"{pre}.lora_A.weight"]) * (4 / 2)
        assert torch.allclose(e[f"{key}.weight"] - b[f"{key}.weight"], lam * delta, atol=1e-6)
    assert torch.equal(e["model.layers.0.self_attn.k_proj.weight"],
                       b["model.layers.0.self_attn.k_proj.weight"])


@pytest.mark.parametrize(("args", "message"), [
    ([], "choose exactly one edit"),
    (["--lines-alpha", "0.2", "--graft-fraction", "0.1"], "choose exactly one edit"),
    (["--lines-beta", "0.5", "--scale-intruders", "0.5"], "--lines-beta"),
    (["--graft-fraction", "1.5"], "--graft-fraction"),
])
def test_edit_user_errors(tmp_path, capsys, args, message):
    base, tuned, _ = intruder_models(tmp_path)
    assert run_cli("edit", tuned, "--base", base, "--out", tmp_path / "o", "--quiet",
                   *args) == 2
    assert message in capsys.readouterr().err


def test_edit_refuses_an_existing_output(tmp_path, capsys):
    base, tuned, _ = intruder_models(tmp_path)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert run_cli("edit", tuned, "--base", base, "--lines-alpha", 0.3, "--out", out,
                   "--quiet") == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".taken")]


def test_written_file_is_byte_compatible_with_safetensors(tmp_path):
    from evalkit.analysis.edit import write_safetensors

    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
               "b": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
               "c": torch.tensor(7, dtype=torch.int64)}
    specs = [(k, {"torch.float32": "F32", "torch.bfloat16": "BF16", "torch.int64": "I64"}[
        str(v.dtype)], tuple(v.shape)) for k, v in tensors.items()]
    write_safetensors(tmp_path / "x.safetensors", specs, iter(tensors.items()))
    back = load_file(str(tmp_path / "x.safetensors"))
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)
    assert not math.isnan(float(back["b"][0]))
