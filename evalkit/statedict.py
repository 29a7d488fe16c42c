"""Turn pickled PyTorch weights (a ``.ckpt``/``.pt``/``.pth``/``.bin`` state dict, a ``.bin``-only
Hugging Face folder, an ``adapter_model.bin``) into a normal safetensors folder.

Every file is read with ``torch.load(..., weights_only=True)``: PyTorch's restricted unpickler
knows tensors, containers and plain values and refuses any other global *before* calling it,
so nothing in a checkpoint ever runs. The container layouts people actually save are unwrapped
(PyTorch Lightning ``state_dict``, nanoGPT ``model`` + ``model_args``, DeepSpeed ``module``),
wrapper prefixes stripped (DDP ``module.``, ``torch.compile`` ``_orig_mod.``, a Lightning
module attribute such as ``model.``), nanoGPT's GPT-2 mapped onto Hugging Face GPT-2, and then
every name and shape must match the architecture's model exactly. Tensors keep their dtype.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.fingerprints import META_FILES

STATE_DICT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# Bumped when the conversion's output changes, so older cached folders are not reused.
CONVERTER_VERSION = 1
# Tokenizer and generation files copied from the architecture's folder as they are.
_COPIED_FILES = tuple(f for f in META_FILES if f not in ("config.json", "adapter_config.json"))
# nanoGPT's nn.Linear weights that Hugging Face GPT-2 stores transposed (its Conv1D).
_GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                "mlp.c_proj.weight")


@dataclass
class Loaded:
    """The tensors of a checkpoint file and what was learnt unwrapping it."""

    tensors: dict[str, Any]
    layout: str  # how the file was organised, for the statement
    model_args: dict[str, Any] | None = None  # nanoGPT's architecture arguments
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------- loading


def load_file(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: refuses (one line) anything needing code."""
    import pickle
    import zipfile

    import torch

    try:
        # mmap keeps a 7B file out of memory until written; only the zip format supports it.
        return torch.load(path, map_location="cpu", weights_only=True,
                          mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = f"it calls {found.group(1)}" if found else "it holds a non-tensor object"
            raise EvalkitError(
                f"refused to load {path}: {what}, which needs arbitrary pickle code (evalkit "
                "loads checkpoints with torch.load(weights_only=True) and runs nothing from "
                "them); re-save it with torch.save(model.state_dict()) or as safetensors"
            ) from None
        raise _unreadable(path, exc) from None
    except Exception as exc:  # torch raises many types on a damaged file
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> EvalkitError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
    return EvalkitError(f"cannot read {path}: truncated or not a PyTorch checkpoint "
                        f"({type(exc).__name__}: {reason})")


def unwrap(obj: Any, path: Path) -> Loaded:
    """Find the state dict inside what a training loop saved."""
    import torch

    if not isinstance(obj, dict):
        raise EvalkitError(f"{path} holds a {type(obj).__name__}, not a state dict")
    layout, model_args = "plain state dict", None
    if isinstance(obj.get("state_dict"), dict):
        layout, inner = "PyTorch Lightning checkpoint", obj["state_dict"]
    elif isinstance(obj.get("model"), dict):
        model_args = obj.get("model_args") if isinstance(obj.get("model_args"), dict) else None
        layout = "nanoGPT checkpoint" if model_args else "checkpoint with a 'model' entry"
        inner = obj["model"]
    elif isinstance(obj.get("module"), dict):
        layout, inner = "DeepSpeed checkpoint", obj["module"]
    elif isinstance(obj.get("model_state_dict"), dict):
        layout, inner = "checkpoint with a 'model_state_dict' entry", obj["model_state_dict"]
    else:
        inner = obj
    tensors = {k: v for k, v in inner.items() if isinstance(k, str) and torch.is_tensor(v)}
    if not tensors:
        keys = ", ".join(map(str, list(obj)[:8])) or "none"
        raise EvalkitError(f"{path} holds no tensors (top-level keys: {keys})")
    return Loaded(tensors, layout, model_args)


def load_state_dict(path: Path) -> Loaded:
    return unwrap(load_file(path), path)


# ------------------------------------------------------------------------------- mapping


def expected_weights(config: Any) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Names and shapes the config's model saves, and tied names → the name they share with.

    The model is built on the meta device: no memory, no initialisation.
    """
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise EvalkitError(f"cannot build a causal LM from the config "
                           f"({config.model_type}): {exc}") from None
    config.architectures = config.architectures or [type(model).__name__]  # vLLM needs it
    shapes: dict[str, tuple[int, ...]] = {}
    tied: dict[str, str] = {}
    first: dict[int, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in first:  # the same parameter object under a second name
            tied[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
            shapes[name] = tuple(tensor.shape)
    return shapes, tied


def map_to_model(loaded: Loaded, shapes: dict[str, tuple[int, ...]], tied: dict[str, str],
                 model_type: str, path: Path, config_source: str) -> dict[str, Any]:
    """Rename ``loaded.tensors`` to the model's names; refuse any mismatch in one line."""
    import torch

    tensors = loaded.tensors
    if any("_orig_mod." in k for k in tensors):  # torch.compile wraps any submodule
        tensors = {k.replace("_orig_mod.", ""): v for k, v in tensors.items()}
        loaded.notes.append("torch.compile prefix '_orig_mod.' stripped")
    prefix = _best_prefix(list(tensors), set(shapes) | set(tied))
    if prefix:
        tensors = {k.removeprefix(prefix): v for k, v in tensors.items()}
        loaded.notes.append(f"prefix '{prefix}' stripped")
    if model_type == "gpt2":
        tensors = _nanogpt_to_hf(tensors, shapes, loaded)
    for name, kept in tied.items():  # tied copies are saved once, as save_pretrained does
        if name not in tensors:
            continue
        if kept not in tensors:
            tensors[kept] = tensors.pop(name)
        elif tuple(tensors[kept].shape) != shapes[kept]:
            continue  # the wrong architecture: reported below as a mismatch
        elif torch.equal(tensors[name], tensors[kept]):
            del tensors[name]
        else:
            raise EvalkitError(f"{path}: {name} differs from {kept}, but the architecture from "
                               f"{config_source} ties them (wrong --config?)")
    missing = [k for k in shapes if k not in tensors]
    unexpected = [k for k in tensors if k not in shapes]
    misshaped = [k for k in shapes if k in tensors and tuple(tensors[k].shape) != shapes[k]]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        if misshaped:
            k = misshaped[0]
            parts.append(f"{len(misshaped)} mis-shaped (first: {k} is "
                         f"{list(tensors[k].shape)}, expected {list(shapes[k])})")
        raise EvalkitError(f"{path} does not match the {model_type} architecture from "
                           f"{config_source}: {'; '.join(parts)}")
    return tensors


def _best_prefix(keys: list[str], expected: set[str]) -> str:
    """The leading dotted prefix (DDP ``module.``, a Lightning attribute, both) whose removal
    makes most names the model's; ties go to the shortest."""
    best, best_hits = "", sum(k in expected for k in keys)
    parts = keys[0].split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i]) + "."
        hits = sum(k.removeprefix(prefix) in expected for k in keys if k.startswith(prefix))
        if hits > best_hits:
            best, best_hits = prefix, hits
    return best


def _nanogpt_to_hf(tensors: dict[str, Any], shapes: dict[str, tuple[int, ...]],
                   loaded: Loaded) -> dict[str, Any]:
    """nanoGPT names its modules as GPT-2 does, but stores Linear weights (out, in) where HF's
    Conv1D stores (in, out), keeps a causal-mask buffer, and may have no biases."""
    import torch

    # Linear vs Conv1D is only visible in c_attn (3C × C); attn.c_proj is square.
    attn = next((k for k in tensors if k.endswith("attn.c_attn.weight") and k in shapes), None)
    nanogpt = loaded.model_args is not None or (
        attn is not None and tuple(tensors[attn].shape) == shapes[attn][::-1] != shapes[attn])
    if not nanogpt:
        return tensors
    out = {k: v for k, v in tensors.items()
           if not (k.endswith(".attn.bias") and k not in shapes)}  # the causal-mask buffer
    transposed = 0
    for k, v in list(out.items()):
        if k.endswith(_GPT2_CONV1D) and v.ndim == 2:
            out[k] = v.t().contiguous()
            transposed += 1
    loaded.notes.append(f"nanoGPT → Hugging Face GPT-2: {transposed} Linear weights transposed "
                        "to Conv1D")
    if loaded.model_args and loaded.model_args.get("bias") is False:
        zeros = [k for k in shapes if k.endswith(".bias") and k not in out]
        dtype = next(iter(out.values())).dtype
        for k in zeros:  # a zero bias is exactly no bias
            out[k] = torch.zeros(shapes[k], dtype=dtype)
        if zeros:
            loaded.notes.append(f"nanoGPT bias=False: {len(zeros)} zero biases added")
    return out


def nanogpt_config(model_args: dict[str, Any]) -> Any:
    """Hugging Face GPT-2 config of a nanoGPT model (exact GELU as nanoGPT's nn.GELU)."""
    from transformers import GPT2Config

    try:
        return GPT2Config(
            vocab_size=int(model_args["vocab_size"]), n_positions=int(model_args["block_size"]),
            n_embd=int(model_args["n_embd"]), n_layer=int(model_args["n_layer"]),
            n_head=int(model_args["n_head"]), activation_function="gelu",
            layer_norm_epsilon=1e-5, tie_word_embeddings=True,
            architectures=["GPT2LMHeadModel"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EvalkitError(f"nanoGPT model_args lack {exc}; pass --config") from None


# -------------------------------------------------------------------------------- writing


def dominant_dtype(tensors: dict[str, Any]) -> str:
    """The floating dtype holding most parameters (what the config's dtype must say)."""
    counts: dict[str, int] = {}
    for t in tensors.values():
        if t.is_floating_point():
            name = str(t.dtype).removeprefix("torch.")
            counts[name] = counts.get(name, 0) + t.numel()
    return max(counts, key=counts.__getitem__) if counts else "float32"


def write_tensors(tensors: dict[str, Any], dest: Path, seen: set[int] | None = None) -> None:
    """safetensors needs contiguous tensors that share no memory (``seen``: the storages that
    earlier shards of the same model already wrote)."""
    from safetensors.torch import save_file

    seen = set() if seen is None else seen
    ready = {}
    for name, t in tensors.items():
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:  # a view of an already written tensor (e.g. an untied copy)
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        ready[name] = t
    save_file(ready, str(dest), metadata={"format": "pt"})


# The most tensor bytes one conversion holds in memory: safetensors' save_file copies a whole
# file's tensors before writing it, and the source file is memory-mapped, so shards of this size
# keep converting a 7B model to about this much memory. A smaller model stays one
# model.safetensors, byte for byte what save_file writes (so its fingerprint is the original's).
SHARD_BYTES = 2 * 1024**3


def write_shards(tensors: dict[str, Any], folder: Path) -> None:
    """``model.safetensors``, or Hugging Face's sharded layout (``model-0000i-of-0000n``
    files plus ``model.safetensors.index.json``) when the tensors exceed ``SHARD_BYTES``."""
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        write_tensors(tensors, folder / "model.safetensors")
        return
    seen: set[int] = set()
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_tensors(shard, folder / file, seen)  # one shard's bytes in memory at a time
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")


def write_model_folder(tensors: dict[str, Any], config_dir: Path | None, config: Any,
                       dest: Path, statement: dict[str, Any]) -> None:
    """Write ``dest`` atomically: the weights (``write_shards``), config.json (its dtype set to
    the weights'), the architecture folder's tokenizer files, and ``evalkit_conversion.json``."""
    dtype = dominant_dtype(tensors)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        write_shards(tensors, tmp)
        source = config_dir / "config.json" if config_dir is not None else None
        data = json.loads(source.read_text()) if source else config.to_dict()
        key = "dtype" if "dtype" in data else "torch_dtype"
        if source and data.get(key) == dtype and data.get("architectures"):
            shutil.copyfile(source, tmp / "config.json")  # as is: the folder's fingerprint holds
        else:
            data[key] = dtype  # evalkit runs a model in the dtype its config names
            data["architectures"] = data.get("architectures") or config.architectures
            (tmp / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        for name in _COPIED_FILES:
            if config_dir is not None and (config_dir / name).exists():
                shutil.copyfile(config_dir / name, tmp / name)
        statement["dtype"] = dtype
        (tmp / "evalkit_conversion.json").write_text(json.dumps(statement, indent=2) + "\n")
        install(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def install(tmp: Path, dest: Path) -> None:
    """Move a finished folder into place; another process may have finished first."""
    if dest.exists():
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, dest)
