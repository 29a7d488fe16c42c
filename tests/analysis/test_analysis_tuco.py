"""TuCo on tiny llamas: the oracles of analyzers.md §3, and the hooks' bookkeeping."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from oracles import run_cli
from safetensors.torch import load_file, save_file

from evalkit.analysis import tuco
from evalkit.checkpoints import resolve

PROMPTS = ["Question: what is 2 + 3?\nAnswer:", "def add(a, b):", "The capital of France is"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_llama):
    """BASE (tiny llama with the builtin tokenizer) and a perturbed TUNED copy of it."""
    root = tmp_path_factory.mktemp("tuco")
    tuned = shutil.copytree(tiny_llama, root / "tuned")
    g = torch.Generator().manual_seed(5)
    sd = load_file(str(tuned / "model.safetensors"))
    save_file({k: v + 0.02 * torch.randn(v.shape, generator=g) if "layers" in k else v
               for k, v in sd.items()}, str(tuned / "model.safetensors"),
              metadata={"format": "pt"})
    return tiny_llama, tuned


def _prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


def _tuco_cli(tmp_path, base, tuned) -> dict:
    out = tmp_path / "out"
    assert run_cli("analyze", base, tuned, "--tuco", "--prompts", _prompts_file(tmp_path),
                   "--out", out, "--quiet") == 0
    return json.loads((out / "tuco_prompts.json").read_text())


def test_identical_models_give_zero(tmp_path, tiny_llama):
    summary = _tuco_cli(tmp_path, tiny_llama, tiny_llama)
    assert summary["per_prompt"] == [0.0, 0.0, 0.0] and summary["mean"] == 0.0


def test_base_with_zero_update_gives_one(tmp_path, tiny_llama):
    # Zero o_proj and down_proj: every base block returns its input, so PTC = 0 everywhere.
    base = shutil.copytree(tiny_llama, tmp_path / "zero-base")
    sd = load_file(str(base / "model.safetensors"))
    save_file({k: torch.zeros_like(v) if k.endswith(("o_proj.weight", "down_proj.weight"))
               else v for k, v in sd.items()}, str(base / "model.safetensors"),
              metadata={"format": "pt"})
    summary = _tuco_cli(tmp_path, base, tiny_llama)
    assert summary["per_prompt"] == [1.0, 1.0, 1.0]
    assert summary["n"] == 3 and summary["tokens"][0] > 3


def test_contributions_add_up_to_the_tuned_residual_stream(pair):
    base_model, tuned_model, tokenizer = tuco.load_pair(resolve(str(pair[0])),
                                                        resolve(str(pair[1])))
    ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    ptc, ftc = tuco.prompt_contributions(base_model, tuned_model, ids)
    captured = {}
    decoder = tuned_model.get_decoder()
    hook = decoder.norm.register_forward_pre_hook(
        lambda m, args: captured.setdefault("x_L", args[0][0, -1].double()))
    with torch.no_grad():
        decoder(input_ids=ids, use_cache=False)
        x0 = decoder.embed_tokens(ids)[0, -1].double()
    hook.remove()
    # x_L = x_0 + Σ_l (PTC_l + FTC_l): the hooks saw every block's whole update.
    assert torch.allclose(x0 + (ptc + ftc).sum(0), captured["x_L"], atol=1e-5)
    assert ptc.shape == (2, 64) and float(ftc.abs().sum()) > 0
    value = tuco.tuco_from_contributions(ptc, ftc)
    assert 0 < value < 1


def test_adapter_tuco_equals_merged_model_tuco(tmp_path, tiny_llama):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                                     init_lora_weights=False)).save_pretrained(tmp_path / "ad")
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                       str(tmp_path / "ad")).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    base = resolve(str(tiny_llama))
    a = tuco.tuco_for_prompts(base, resolve(str(tmp_path / "ad")), PROMPTS, name="x",
                              progress=False).summary
    m = tuco.tuco_for_prompts(base, resolve(str(tmp_path / "merged")), PROMPTS, name="x",
                              progress=False).summary
    assert a.per_prompt == pytest.approx(m.per_prompt, abs=1e-6)
    assert 0 < a.mean < 1


@pytest.mark.slow
def test_task_prompts_through_the_cli(tmp_path, pair, data_dir):
    out = tmp_path / "out"
    assert run_cli("analyze", pair[0], pair[1], "--tuco", "--task", "gsm8k", "--limit", 2,
                   "--out", out, "--quiet") == 0
    summary = json.loads((out / "tuco_gsm8k.json").read_text())
    assert summary["task"] == "gsm8k" and summary["n"] == 2
    assert all(0 < v < 1 for v in summary["per_prompt"])
    assert (out / "tuco_gsm8k.csv").exists() and (out / "tuco_gsm8k.png").exists()


def test_tuco_needs_task_or_prompts(tmp_path, tiny_llama, capsys):
    assert run_cli("analyze", tiny_llama, tiny_llama, "--tuco", "--out", tmp_path) == 2
    assert "--task or --prompts" in capsys.readouterr().err
