"""A LoRA adapter is merged per matrix on the fly; PEFT's own merge is the oracle."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from oracles import make_tiny_llama, run_cli


def _adapter(base: Path, dest: Path, seed: int, **config) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    # init_lora_weights=False: B is random too, so ΔW ≠ 0 without training
    peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **config))
    peft_model.save_pretrained(dest)
    return dest


def _peft_merged(base: Path, adapter: Path, dest: Path) -> Path:
    """PEFT's merge in float64, saved by the test itself: the independent reference."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(dest)
    return dest


def _analyze(out: Path, base, tuned, *args) -> tuple[pd.DataFrame, dict]:
    assert run_cli("analyze", base, tuned, "--dtype", "float64", "--out", out, "--quiet",
                   *args) == 0
    return (pd.read_parquet(out / "matrices.parquet").set_index("name"),
            json.loads((out / "summary.json").read_text()))


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("lora") / "base", seed=0)


@pytest.mark.parametrize("config", [
    {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"],
     "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"down_proj": 16}},
    {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "o_proj"], "use_rslora": True},
], ids=["patterns", "rslora"])
def test_adapter_equals_peft_merged_model(tmp_path, llama, config):
    adapter = _adapter(llama, tmp_path / "adapter", seed=1, **config)
    merged = _peft_merged(llama, adapter, tmp_path / "merged")
    via_adapter, summary = _analyze(tmp_path / "a", llama, adapter)
    via_merged, _ = _analyze(tmp_path / "m", llama, merged)
    cols = ["rel_update", "effective_rank", "stable_rank", "energy_rank", "subspace_sim",
            "intruders", *[f"max_cos_{j}" for j in range(1, 11)]]
    pd.testing.assert_frame_equal(via_adapter[cols], via_merged[cols], atol=1e-7, rtol=1e-7)

    targeted = via_adapter[via_adapter["lora_r"].notna()]
    assert set(targeted["module"]) == set(config["target_modules"])
    assert (via_adapter[via_adapter["lora_r"].isna()]["rel_update"] == 0).all()
    for name, row in targeted.iterrows():
        r = config.get("rank_pattern", {}).get(row["module"], config["r"])
        alpha = config.get("alpha_pattern", {}).get(row["module"], config["lora_alpha"])
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        assert row["lora_r"] == r, name
        assert row["lora_scale"] == pytest.approx(scale), name
        assert row["energy_rank"] <= r  # ΔW = scale·B·A has rank ≤ r
    lora = summary["lora"]
    assert lora["r"] == 4 and lora["lora_alpha"] == 8
    assert lora["use_rslora"] == bool(config.get("use_rslora"))
    assert summary["tuned"]["kind"] == "adapter"


def test_embedding_lora_and_modules_to_save(tmp_path, llama):
    adapter = _adapter(llama, tmp_path / "adapter", seed=2, r=4, lora_alpha=8,
                       target_modules=["q_proj", "embed_tokens"], modules_to_save=["lm_head"])
    # the adapter really replaces lm_head, so the analysis must see a change there
    with torch.no_grad():
        from safetensors.torch import load_file, save_file

        sd = load_file(adapter / "adapter_model.safetensors")
        sd["base_model.model.lm_head.weight"] += 0.01
        save_file(sd, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    merged = _peft_merged(llama, adapter, tmp_path / "merged")
    via_adapter, _ = _analyze(tmp_path / "a", llama, adapter, "--include-embeddings")
    via_merged, _ = _analyze(tmp_path / "m", llama, merged, "--include-embeddings")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert via_adapter.loc[name, "rel_update"] > 0
        assert via_adapter.loc[name, "rel_update"] == pytest.approx(
            via_merged.loc[name, "rel_update"], rel=1e-9)
        assert via_adapter.loc[name, "effective_rank"] == pytest.approx(
            via_merged.loc[name, "effective_rank"], rel=1e-6)
    assert via_adapter.loc["model.embed_tokens.weight", "energy_rank"] <= 4


def test_dora_adapter_is_refused(tmp_path, llama, capsys):
    adapter = _adapter(llama, tmp_path / "adapter", seed=3, r=2, target_modules=["q_proj"],
                       use_dora=True)
    assert run_cli("analyze", llama, adapter, "--out", tmp_path / "o", "--quiet") == 2
    assert "DoRA" in capsys.readouterr().err
