"""evalkit finetune, the training side: real transformers/peft training of a tiny random llama.

For every method: what must stay frozen is bit-identical afterwards, what must train changed, and
the output folder loads in transformers / peft and resolves as an evalkit checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.checkpoints import resolve
from evalkit.errors import EvalkitError
from evalkit.finetune import MANIFEST_NAME, FinetuneConfig, Manifest, finetune
from evalkit.finetune import hft as hft_module

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ftdata") / "facts.jsonl"
    rows = [{"prompt": f"Q: what is item {i}?\nA:", "completion": f" item {i} is {i * 7 % 13}"}
            for i in range(10)]
    rows += [{"messages": [{"role": "user", "content": f"Name {i}?"},
                           {"role": "assistant", "content": f"Name {i} is Bob{i}."}]}
             for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(base: Path, data: Path, out: Path, method: str, **overrides) -> FinetuneConfig:
    settings = {"epochs": 2, "batch_size": 4, "lr": 1e-3, "seed": 0} | overrides
    return FinetuneConfig(base=str(base), data=str(data), out=out, method=method, **settings)


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(folder: Path) -> Manifest:
    return Manifest.model_validate_json((folder / MANIFEST_NAME).read_text())


# One straight run per method, shared by the tests that compare against it.
@pytest.fixture(scope="module")
def full_run(tiny_llama, train_file, tmp_path_factory) -> Path:
    return finetune(config(tiny_llama, train_file, tmp_path_factory.mktemp("full") / "out", "full"))


@pytest.fixture(scope="module")
def lora_run(tiny_llama, train_file, tmp_path_factory) -> Path:
    return finetune(config(tiny_llama, train_file, tmp_path_factory.mktemp("lora") / "out", "lora",
                           rank=4, alpha=8))


# ------------------------------------------------------------------------------- full


@pytest.mark.slow
def test_full_finetune_changes_every_tensor_and_loads(tiny_llama, full_run):
    import torch
    from transformers import AutoModelForCausalLM

    out = full_run
    before, after = tensors(tiny_llama / "model.safetensors"), tensors(out / "model.safetensors")
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []

    m = manifest(out)
    assert (m.kind, m.method, m.steps) == ("model", "full", 8)  # 16 examples / 4 × 2 epochs
    assert m.trainable_params == m.total_params
    assert m.base.spec == str(tiny_llama) and m.base.fingerprint == resolve(tiny_llama).fingerprint
    assert m.data.examples == 16 and m.data.format == "mixed"
    assert len(m.loss_history) == 8 and m.final_loss == pytest.approx(m.loss_history[-1], abs=1e-5)
    assert m.loss_history[-1] < m.loss_history[0]
    assert {"torch", "transformers", "peft", "accelerate"} <= m.versions.keys()
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out.parent / ".out.partial").exists()  # the work folder is gone

    checkpoint = resolve(out)
    assert checkpoint.kind == "model" and checkpoint.fingerprint != resolve(tiny_llama).fingerprint
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32
    generated = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == 6


# ------------------------------------------------------------------------------- LoRA


def initial_lora_weights(base: Path, cfg: FinetuneConfig) -> dict:
    """The adapter as initialized before training (same seed → same random A matrices)."""
    from accelerate.utils import set_seed

    from evalkit.finetune import methods

    set_seed(cfg.seed)
    model, _ = methods.load_model(base)
    model, _, _ = methods.prepare(model, cfg)
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


@pytest.mark.slow
@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
def test_lora_trains_only_the_adapter_and_loads_in_peft(tiny_llama, train_file, tmp_path, rslora,
                                                        lora_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = config(tiny_llama, train_file, tmp_path / "lora", "lora", rank=4, alpha=8,
                 rslora=rslora)
    out = finetune(cfg) if rslora else lora_run
    assert not (out / "model.safetensors").exists()

    saved = tensors(out / "adapter_model.safetensors")
    assert saved and all(".lora_A." in k or ".lora_B." in k for k in saved)  # no base weights
    initial = {k.replace(".default", ""): v for k, v in initial_lora_weights(tiny_llama,
                                                                             cfg).items()}
    assert saved.keys() == initial.keys()
    assert all(not torch.equal(saved[k], initial[k]) for k in saved)  # A moved, B left zero
    assert all(initial[k].abs().sum() == 0 for k in initial if ".lora_B." in k)

    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["use_rslora"] is rslora and adapter_config["r"] == 4
    m = manifest(out)
    expected_scaling = 8 / math.sqrt(4) if rslora else 8 / 4
    assert m.kind == "adapter" and m.lora.scaling == expected_scaling
    assert m.lora.target_modules == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                     "up_proj", "v_proj"]

    base_model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tuned = PeftModel.from_pretrained(base_model, out)
    layer = tuned.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(expected_scaling)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        tuned_logits = tuned(ids).logits
        with tuned.disable_adapter():
            base_logits = tuned(ids).logits
    assert not torch.allclose(tuned_logits, base_logits)

    checkpoint = resolve(out)
    assert checkpoint.kind == "adapter" and checkpoint.base.path == resolve(tiny_llama).path


@pytest.mark.slow
def test_lora_target_modules_are_respected(tiny_llama, train_file, tmp_path):
    out = finetune(config(tiny_llama, train_file, tmp_path / "lora-qv", "lora", rank=2,
                          target_modules=["q_proj", "v_proj"], epochs=1))
    keys = tensors(out / "adapter_model.safetensors").keys()
    assert {k.split(".")[-3] for k in keys} == {"q_proj", "v_proj"}
    assert manifest(out).lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.slow
def test_limit_trains_on_the_first_n_examples_in_file_order(tiny_llama, train_file, tmp_path):
    from evalkit.finetune.data import fingerprint, load_examples

    out = finetune(config(tiny_llama, train_file, tmp_path / "first5", "lora", rank=2, epochs=1,
                          limit=5))
    data = manifest(out).data
    assert (data.examples, data.limit) == (5, 5)
    assert data.fingerprint == fingerprint(load_examples(str(train_file))[:5])


# -------------------------------------------------------------------------------- HFT


@pytest.mark.slow
def test_hft_freezes_the_unselected_half_bit_for_bit(tiny_llama, train_file, tmp_path):
    import torch

    out = finetune(config(tiny_llama, train_file, tmp_path / "hft", "hft"))
    before, after = tensors(tiny_llama / "model.safetensors"), tensors(out / "model.safetensors")
    selection = manifest(out).hft.selection
    trained = {f"{block}.{module}.weight" for block, modules in selection.items()
               for module in modules}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trained
    # the rule: per block 2 of 4 attention projections, 1 of 2 norms; MLP 2 + 1 over 2 blocks
    for modules in selection.values():
        assert sum(m.startswith("self_attn.") for m in modules) == 2
        assert sum("layernorm" in m for m in modules) == 1
    assert sorted(sum(m.startswith("mlp.") for m in mods) for mods in selection.values()) == [1, 2]
    m = manifest(out)
    assert m.hft.policy["embeddings"] == "frozen" and m.hft.policy["lm_head"] == "frozen"
    assert "model.embed_tokens.weight" not in changed and "lm_head.weight" not in changed


def llama_param_names(blocks: int) -> list[str]:
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for i in range(blocks):
        names += [f"model.layers.{i}.self_attn.{p}.weight" for p in hft_module.ATTENTION]
        names += [f"model.layers.{i}.mlp.{p}.weight" for p in hft_module.MLP]
        names += [f"model.layers.{i}.{n}.weight" for n in ("input_layernorm",
                                                            "post_attention_layernorm")]
    return names


@pytest.mark.parametrize("blocks", [30, 7])
def test_hft_selection_rule(blocks):
    selection = hft_module.select(llama_param_names(blocks), seed=1)
    assert list(selection) == [f"model.layers.{i}" for i in range(blocks)]
    mlp = [sum(m.startswith("mlp.") for m in mods) for mods in selection.values()]
    assert set(mlp) == {1, 2} and abs(sum(mlp) - 1.5 * blocks) <= 0.5
    assert all(sum(m.startswith("self_attn.") for m in mods) == 2 for mods in selection.values())
    assert selection == hft_module.select(llama_param_names(blocks), seed=1)
    assert selection != hft_module.select(llama_param_names(blocks), seed=1, stage=1)
    assert selection != hft_module.select(llama_param_names(blocks), seed=2)


def test_hft_needs_llama_style_projections():
    names = [f"transformer.h.{i}.attn.c_attn.weight" for i in range(2)]
    with pytest.raises(EvalkitError, match="HFT needs"):
        hft_module.select(names, seed=0)


# ------------------------------------------------------------- determinism and resume


@pytest.mark.slow
def test_same_seed_gives_identical_weights(tiny_llama, train_file, tmp_path, full_run):
    again = finetune(config(tiny_llama, train_file, tmp_path / "again", "full"))
    other_seed = finetune(config(tiny_llama, train_file, tmp_path / "seed1", "full", seed=1))
    assert sha256(again / "model.safetensors") == sha256(full_run / "model.safetensors")
    assert sha256(other_seed / "model.safetensors") != sha256(full_run / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_interrupted_run_resumes_to_the_same_weights(tiny_llama, train_file, tmp_path, method,
                                                     full_run, lora_run):
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    straight = lora_run if method == "lora" else full_run
    extra = {"rank": 4, "alpha": 8} if method == "lora" else {}

    def interrupt_after_step_3(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    cfg = config(tiny_llama, train_file, tmp_path / "resumed", method, save_every=2, **extra)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, on_step=interrupt_after_step_3)
    assert not cfg.out.exists()  # nothing that looks finished
    checkpoint = tmp_path / ".resumed.partial" / "checkpoint"
    assert (checkpoint / "model.safetensors").exists()
    if method == "lora":  # checkpoints hold trainable tensors only
        assert all("lora_" in k for k in tensors(checkpoint / "model.safetensors"))

    steps_seen = []
    out = finetune(cfg, on_step=lambda step, loss: steps_seen.append(step))
    assert steps_seen == [3, 4, 5, 6, 7, 8]  # continued after the step-2 checkpoint
    assert sha256(out / weights) == sha256(straight / weights)
    assert manifest(out).loss_history == pytest.approx(manifest(straight).loss_history)


@pytest.mark.slow
def test_partial_run_with_other_settings_is_refused(tiny_llama, train_file, tmp_path):
    cfg = config(tiny_llama, train_file, tmp_path / "out", "full", save_every=1)

    def stop(step: int, loss: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, on_step=stop)
    with pytest.raises(EvalkitError, match="unfinished fine-tune with different settings"):
        finetune(cfg.model_copy(update={"lr": 5e-4}))


def test_existing_output_is_not_overwritten_silently(tiny_llama, train_file, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(EvalkitError, match="already exists"):
        finetune(config(tiny_llama, train_file, out, "full"))


# --------------------------------------------------------------------------------- CLI


def test_cli_reports_bad_data_in_one_line(tiny_llama, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "finetune", str(tiny_llama), "--data", str(bad),
         "--method", "lora", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: bad.jsonl line 2: needs")
    assert not (tmp_path / "o").exists()


def test_cli_validates_options(tiny_llama, train_file, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "finetune", str(tiny_llama), "--data", str(train_file),
         "--method", "qlora", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 2 and "error: --method" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "finetune", str(tiny_llama), "--data", str(train_file),
         "--method", "lora", "--limit", "0", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 2 and "error: --limit" in proc.stderr


def test_defaults_depend_on_method_and_knowledge_data(tmp_path):
    def resolved(data: str, method: str, **given) -> tuple:
        c = FinetuneConfig(base="b", data=data, out=tmp_path, method=method, **given)
        c = c.with_defaults()
        return c.epochs, c.lr

    assert resolved("mbpp:train", "lora") == (3, 2e-4)
    assert resolved("mbpp:train", "full") == (3, 1e-5)
    assert resolved("finetunebench:fictional_people", "lora") == (10, 1e-3)
    assert resolved("finetunebench:medical", "lora", epochs=2, lr=5e-4) == (2, 5e-4)
