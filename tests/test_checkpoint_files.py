"""State dicts as people save them (.ckpt/.pt/.pth/.bin, .bin-only folders, adapter_model.bin):
read without running pickle code, mapped onto the architecture, converted once into the same
fingerprinted safetensors weights as the original."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import torch

from evalkit.checkpoints import file_sha256, resolve
from evalkit.errors import EvalkitError

# Each layout wraps a model's state dict the way a training stack saves it.
LAYOUTS = {
    "plain.pt": lambda sd: sd,
    "lightning.ckpt": lambda sd: {
        "state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 2, "global_step": 40,
        "hyper_parameters": {"lr": 1e-4, "model_name": "tiny", "betas": (0.9, 0.95)},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}]},
    "ddp.pth": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "compiled.bin": lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
    "lightning-compiled.ckpt": lambda sd: {
        "state_dict": {f"net._orig_mod.{k}": v for k, v in sd.items()}},
    "deepspeed.pt": lambda sd: {"module": sd, "global_steps": 40},  # consolidated to one file
    "fsdp.pt": lambda sd: {"model": sd, "optim": {"state": {}}},  # dcp_to_torch_save output
}


def _state_dict(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()  # tied lm_head included


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_resolves_to_the_original_weights(tmp_path, tiny_llama, name):
    path = tmp_path / name
    torch.save(LAYOUTS[name](_state_dict(tiny_llama)), path)
    converted = resolve(path, config=str(tiny_llama))
    assert converted.source == "state-dict" and converted.kind == "model"
    assert converted.fingerprint == resolve(tiny_llama).fingerprint  # weights, config, tokenizer
    assert resolve(path, config=str(tiny_llama)).path == converted.path  # converted once


def test_large_conversion_is_written_in_shards(tmp_path, tiny_llama, monkeypatch):
    """Above SHARD_BYTES the weights go into Hugging Face's sharded layout, one shard in memory
    at a time; transformers loads the same tensors and generates the same tokens."""
    from transformers import AutoModelForCausalLM

    from evalkit import statedict

    original = _state_dict(tiny_llama)
    nbytes = sum(t.numel() * t.element_size() for t in original.values())
    monkeypatch.setattr(statedict, "SHARD_BYTES", nbytes // 3)
    torch.save(original, tmp_path / "big.pt")
    converted = resolve(tmp_path / "big.pt", config=str(tiny_llama))
    shards = sorted(converted.path.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3 and not (converted.path / "model.safetensors").exists()
    index = json.loads((converted.path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f.name for f in shards}
    model = AutoModelForCausalLM.from_pretrained(converted.path)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in original.items())
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(model.generate(ids, max_new_tokens=8, do_sample=False),
                       reference.generate(ids, max_new_tokens=8, do_sample=False))


def test_architecture_beside_the_file_then_base(tmp_path, tiny_llama):
    original = resolve(tiny_llama)
    torch.save(_state_dict(tiny_llama), tmp_path / "tuned.pt")
    with pytest.raises(EvalkitError, match="nothing says its architecture: pass --config"):
        resolve(tmp_path / "tuned.pt")
    assert resolve(tmp_path / "tuned.pt", fallback=original).fingerprint == original.fingerprint
    for f in tiny_llama.iterdir():  # config, tokenizer, generation config
        if f.suffix != ".safetensors":
            shutil.copy(f, tmp_path / f.name)
    beside = resolve(tmp_path / "tuned.pt")
    assert beside.fingerprint == original.fingerprint
    assert json.loads((beside.path / "evalkit_conversion.json").read_text())["dtype"] == "float32"


def test_bfloat16_weights_keep_their_dtype(tmp_path, tiny_llama):
    sd = {k: v.to(torch.bfloat16) for k, v in _state_dict(tiny_llama).items()}
    torch.save(sd, tmp_path / "bf16.pt")
    converted = resolve(tmp_path / "bf16.pt", config=str(tiny_llama))
    config = json.loads((converted.path / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    from safetensors import safe_open

    with safe_open(converted.path / "model.safetensors", framework="pt") as f:
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16


def test_pickle_only_folder_and_sharded_index(tmp_path, tiny_llama):
    sd = _state_dict(tiny_llama)
    marker = tmp_path / "MARKER"
    for name, shards in (("single", 1), ("sharded", 2)):
        folder = tmp_path / name
        folder.mkdir()
        for f in tiny_llama.iterdir():
            if f.suffix != ".safetensors":
                shutil.copy(f, folder / f.name)
        keys = sorted(sd)
        if shards == 1:
            torch.save(sd, folder / "pytorch_model.bin")
        else:
            weight_map = {}
            for i, part in enumerate((keys[::2], keys[1::2]), 1):
                file = f"pytorch_model-0000{i}-of-00002.bin"
                torch.save({k: sd[k] for k in part}, folder / file)
                weight_map |= dict.fromkeys(part, file)
            (folder / "pytorch_model.bin.index.json").write_text(
                json.dumps({"weight_map": weight_map}))
        torch.save(Evil(marker), folder / "training_args.bin")  # never a weight file
        assert resolve(folder).fingerprint == resolve(tiny_llama).fingerprint
    assert not marker.exists()


def test_adapter_model_bin_resolves_like_its_safetensors_twin(tmp_path, tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                      init_lora_weights=False))
    model.save_pretrained(tmp_path / "st")
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin/adapter_model.bin").exists()
    assert not (tmp_path / "bin/adapter_model.safetensors").exists()
    st, pickled = resolve(tmp_path / "st"), resolve(tmp_path / "bin")
    assert pickled.kind == "adapter" and pickled.name == "bin"
    assert pickled.fingerprint == st.fingerprint
    assert pickled.base.fingerprint == resolve(tiny_llama).fingerprint


def test_nanogpt_checkpoint_maps_onto_hf_gpt2(tmp_path):
    """nanoGPT's train.py checkpoint (compiled model, Linear weights, causal-mask buffers)
    becomes the Hugging Face GPT-2 it is, with identical greedy generations."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    args = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64, "bias": True,
            "vocab_size": 96, "dropout": 0.0}
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=2,
        activation_function="gelu", tie_word_embeddings=True)).eval()
    hf.save_pretrained(tmp_path / "hf")
    nano = {}
    for k, v in hf.state_dict().items():
        if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            v = v.t().contiguous()  # nn.Linear (out, in) where HF's Conv1D is (in, out)
        nano[f"_orig_mod.{k}"] = v
    for i in range(2):
        nano[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64))[None, None]
    torch.save({"model": nano, "model_args": args, "iter_num": 500,
                "best_val_loss": torch.tensor(1.5), "config": {"dataset": "shakespeare"},
                "optimizer": {"state": {}, "param_groups": [{"lr": 6e-4, "params": [0]}]}},
               tmp_path / "ckpt.pt")
    converted = resolve(tmp_path / "ckpt.pt")
    steps = json.loads((converted.path / "evalkit_conversion.json").read_text())["steps"]
    assert any("transposed" in s for s in steps), steps
    assert (file_sha256(converted.path / "model.safetensors")
            == file_sha256(tmp_path / "hf/model.safetensors"))
    ids = torch.tensor([[5, 17, 42, 8]])
    back = GPT2LMHeadModel.from_pretrained(converted.path).eval()
    greedy = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(back.generate(ids, **greedy), hf.generate(ids, **greedy))


# --------------------------------------------------------------------------- bad input


class Evil:
    """A pickle that would create ``marker`` when unpickled with weights_only=False."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _cli(monkeypatch, capsys, *args):
    """The real `evalkit` entry point, in process: (exit code, stderr lines)."""
    from evalkit.cli import main

    monkeypatch.setattr(sys, "argv", ["evalkit", *args])
    capsys.readouterr()  # drop what building the inputs printed
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()


def _mismatched(tmp_path, tiny_llama):
    sd = _state_dict(tiny_llama)
    del sd["model.norm.weight"]
    sd["model.extra.weight"] = torch.zeros(2)
    sd["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "bad.ckpt")
    return tmp_path / "bad.ckpt", str(tiny_llama)


def _wrong_config(tmp_path, tiny_llama):
    torch.save(_state_dict(tiny_llama), tmp_path / "tiny.ckpt")
    return tmp_path / "tiny.ckpt", "builtin:smollm2-135m"


def _truncated(tmp_path, tiny_llama):
    torch.save(_state_dict(tiny_llama), tmp_path / "full.ckpt")
    data = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.ckpt", str(tiny_llama)


def _no_tensors(tmp_path, tiny_llama):
    torch.save({"epoch": 3, "hyper_parameters": {"lr": 0.1}}, tmp_path / "empty.ckpt")
    return tmp_path / "empty.ckpt", str(tiny_llama)


def _malicious(tmp_path, tiny_llama):
    sd = _state_dict(tiny_llama)
    torch.save({"state_dict": sd, "hyper_parameters": {"x": Evil(tmp_path / "MARKER")}},
               tmp_path / "evil.ckpt")
    return tmp_path / "evil.ckpt", str(tiny_llama)


@pytest.mark.parametrize("make,message", [
    (_mismatched, r"does not match the llama architecture from --config .*: 1 missing \(first: "
                  r"model\.norm\.weight\); 1 unexpected \(first: model\.extra\.weight\); 1 "
                  r"mis-shaped \(first: model\.layers\.0\.mlp\.up_proj\.weight is \[3, 3\]"),
    (_wrong_config, r"does not match the llama architecture from --config builtin:smollm2-135m"
                    r": \d+ missing .*mis-shaped"),
    (_truncated, r"cannot read .*cut\.ckpt: truncated or not a PyTorch checkpoint"),
    (_no_tensors, r"empty\.ckpt holds no tensors \(top-level keys: epoch, hyper_parameters\)"),
    (_malicious, r"refused to load .*evil\.ckpt: it calls posix\.system, which needs arbitrary "
                 r"pickle code"),
], ids=["mismatched-keys", "wrong-config", "truncated", "no-tensors", "malicious-pickle"])
def test_bad_state_dicts_are_one_line_and_exit_2(tmp_path, tiny_llama, monkeypatch, capsys,
                                                 make, message):
    path, config = make(tmp_path, tiny_llama)
    code, lines = _cli(monkeypatch, capsys, "run", "--model", str(path), "--config", config,
                       "--task", "gsm8k", "--limit", "1", "--backend", "hf",
                       "--out", str(tmp_path / "runs"))
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "MARKER").exists()
    assert not (tmp_path / "runs").exists()


def test_malformed_config_is_refused_before_the_engine_starts(tmp_path, tiny_llama,
                                                               monkeypatch, capsys):
    folder = shutil.copytree(tiny_llama, tmp_path / "model")
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 64,')
    code, lines = _cli(monkeypatch, capsys, "run", "--model", str(folder), "--task", "gsm8k",
                       "--limit", "1", "--backend", "vllm", "--out", str(tmp_path / "runs"))
    assert code == 2 and lines == [lines[0]] and "config.json is not valid JSON" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_analyze_and_finetune_take_state_dicts(tmp_path, tiny_llama, monkeypatch, capsys):
    """analyze: BASE's architecture is beside it, TUNED (elsewhere) borrows BASE's; finetune:
    a .pt BASE with --config, and the adapter it writes finds that base again."""
    (tmp_path / "b").mkdir()
    (tmp_path / "t").mkdir()
    sd = _state_dict(tiny_llama)
    torch.save(sd, tmp_path / "b/base.pt")
    for f in tiny_llama.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, tmp_path / "b" / f.name)
    torch.save({"state_dict": {f"model.{k}": v * 1.01 for k, v in sd.items()}},
               tmp_path / "t/tuned.ckpt")
    code, lines = _cli(monkeypatch, capsys, "analyze", str(tmp_path / "b/base.pt"),
                       str(tmp_path / "t/tuned.ckpt"), "--spectra-only", "--quiet",
                       "--out", str(tmp_path / "analysis"))
    assert code == 0, lines
    assert any((tmp_path / "analysis").iterdir())

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f" A{i}."}) + "\n"
                            for i in range(4)))
    code, lines = _cli(monkeypatch, capsys, "finetune", str(tmp_path / "t/tuned.ckpt"),
                       "--config", str(tiny_llama), "--data", str(data), "--method", "lora",
                       "--rank", "2", "--epochs", "1", "--batch-size", "4",
                       "--out", str(tmp_path / "lora"))
    assert code == 0, lines
    adapter = resolve(tmp_path / "lora")
    assert adapter.kind == "adapter" and adapter.base.source == "state-dict"
    assert adapter.base.fingerprint == resolve(tmp_path / "t/tuned.ckpt",
                                               config=str(tiny_llama)).fingerprint


# ----------------------------------------------------------- the embedded model's weights


@pytest.fixture(scope="module")
def embedded_layouts(tmp_path_factory, builtin_model):
    """The embedded model's own weights saved in each layout, converted in a private cache
    (540 MB each; removed afterwards)."""
    root = tmp_path_factory.mktemp("embedded")
    sd = _state_dict(builtin_model.path)
    saved = os.environ["EVALKIT_CACHE_DIR"]
    os.environ["EVALKIT_CACHE_DIR"] = str(root / "cache")
    try:
        resolved = {}
        for name in ("plain.pt", "lightning.ckpt", "ddp.pth", "compiled.bin"):
            torch.save(LAYOUTS[name](sd), root / name)
            resolved[name] = resolve(root / name, config=str(builtin_model.path))
            (root / name).unlink()
        yield resolved
    finally:
        os.environ["EVALKIT_CACHE_DIR"] = saved
        shutil.rmtree(root, ignore_errors=True)


def test_embedded_model_in_every_layout(embedded_layouts, builtin_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert {c.fingerprint for c in embedded_layouts.values()} == {builtin_model.fingerprint}
    tokenizer = AutoTokenizer.from_pretrained(builtin_model.path)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+3?"}],
                                        add_generation_prompt=True, return_tensors="pt")
    ids = getattr(ids, "input_ids", ids)
    outputs = []
    for folder in (builtin_model.path, embedded_layouts["lightning.ckpt"].path):
        model = AutoModelForCausalLM.from_pretrained(folder)
        outputs.append(model.generate(ids, max_new_tokens=16, do_sample=False)[0].tolist())
    assert outputs[0] == outputs[1]


@pytest.mark.slow
def test_compare_base_ckpt_tuned_ckpt_end_to_end(tmp_path, builtin_model):
    """The README's first command: BASE saved with torch.save, TUNED a fine-tune saved by a
    Lightning-style loop; the architecture from --config. The hf backend keeps it lean (no
    engine start); vLLM reads the same converted folders (test_every_layout_* checks them)."""
    import subprocess

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(builtin_model.path)
    torch.save(model.state_dict(), tmp_path / "base.ckpt")
    tokenizer = AutoTokenizer.from_pretrained(builtin_model.path)
    batch = tokenizer(["Question: what is 12 + 30? Answer: 42."], return_tensors="pt")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model(**batch, labels=batch["input_ids"]).loss.backward()
    optimizer.step()  # one real fine-tuning step
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"lr": 1e-3}, "epoch": 0}, tmp_path / "tuned.ckpt")
    del model, optimizer
    out = tmp_path / "cmp"
    env = {**os.environ, "EVALKIT_CACHE_DIR": str(tmp_path / "cache")}  # 2 × 540 MB, removed
    # Its own session: on a timeout the whole group goes, vLLM engine processes included.
    child = subprocess.Popen(
        [sys.executable, "-m", "evalkit", "compare", "base.ckpt", "tuned.ckpt",
         "--config", str(builtin_model.path), "--tasks", "gsm8k", "--limit", "2",
         "--max-tokens", "8", "--backend", "hf", "--out", str(out),
         "--runs-dir", str(tmp_path / "runs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
        start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, 9)
        stdout, stderr = child.communicate()
        pytest.fail(f"compare timed out; stderr tail: {stderr[-2000:]}")
    finally:
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    proc = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "converted base.ckpt (plain state dict" in " ".join(proc.stderr.split())
    assert "prefix 'model.' stripped" in " ".join(proc.stderr.split())
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("run.json")]
    fingerprints = {r["checkpoint"]["spec"]: r["checkpoint"]["fingerprint"] for r in runs}
    assert fingerprints["base.ckpt"] == builtin_model.fingerprint  # the same weights as stored
    assert fingerprints["tuned.ckpt"] != builtin_model.fingerprint
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert {r["task"] for r in rows} == {"gsm8k"} and all(r["n_items"] == 2 for r in rows)
