"""Read a checkpoint's tensors one at a time, merging a LoRA adapter per matrix on the fly.

Each read opens the safetensors file, copies one tensor out and closes the file again. Keeping
one ``safe_open`` handle for the whole pass would be simpler, but its memory map keeps every
page already read resident, so the process would end up holding the whole file; reopening
costs a header parse (milliseconds) and keeps peak memory at a few matrices.

A LoRA adapter is never merged into a model on disk: ``WeightSource.read`` returns
``W + scale·B·A`` for the one matrix asked for, and ``delta`` returns ``scale·B·A`` alone so
ΔW is exact instead of the difference of two rounded matrices.
"""
# size: one reader (model files, LoRA adapters, matrix selection) whose parts share the tensor
# naming rules; splitting them would spread those rules over three modules.

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    import torch

# Rows read at a time by ModelFiles.read_minus (bytes of the result).
_BLOCK_BYTES = 8 << 20

# Decoder-block index inside a parameter name: model.layers.3., transformer.h.3., blocks.3. ...
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
# Embeddings and output heads (outside the blocks, excluded from the analysis by default).
_EMBED_RE = re.compile(
    r"(?:^|\.)(embed_tokens|embed_positions|wte|wpe|word_embeddings|position_embeddings|"
    r"embed_in|embed_out|lm_head|output)\.weight$"
)


def layer_index(name: str) -> int | None:
    """Decoder-block index of a parameter, or None outside the blocks."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def module_name(name: str) -> str:
    """Short module name: ``model.layers.0.self_attn.q_proj.weight`` → ``q_proj``."""
    parts = name.split(".")
    return parts[-2] if len(parts) >= 2 and parts[-1] in ("weight", "bias") else parts[-1]


def is_embedding(name: str) -> bool:
    return bool(_EMBED_RE.search(name))


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    shape: tuple[int, ...]
    dtype: str  # safetensors spelling: F32, BF16, F16, ...


class ModelFiles:
    """Index of every tensor in a folder's ``*.safetensors`` files (headers only)."""

    def __init__(self, folder: Path, files: list[Path] | None = None):
        from safetensors import safe_open

        self.folder = Path(folder)
        self.index: dict[str, TensorInfo] = {}
        files = files if files is not None else weight_files(self.folder)
        if not files:
            raise EvalkitError(f"{self.folder} has no *.safetensors weights")
        for path in files:
            with safe_open(path, framework="pt") as f:
                for key in f.keys():  # noqa: SIM118  (safe_open is not a dict)
                    sl = f.get_slice(key)
                    self.index[key] = TensorInfo(path, tuple(sl.get_shape()), sl.get_dtype())

    def names(self) -> list[str]:
        return list(self.index)

    def read(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        info = self.index[name]
        with safe_open(info.file, framework="pt") as f:
            return f.get_tensor(name)

    def read_minus(self, name: str, other: torch.Tensor) -> torch.Tensor:
        """This tensor minus ``other`` (same shape, its dtype), read a block of rows at a time.

        Reads with plain file I/O at the tensor's offset (safetensors: 8-byte header length,
        JSON header, then the raw little-endian data). Through ``safe_open`` every page read
        stays mapped, and counted in the process's memory, until the file is closed, so
        ``read(name) - other`` would hold the tensor next to the difference: two matrices."""
        import torch

        info = self.index[name]
        dtype_name = _DTYPE_NAMES.get(info.dtype)
        if dtype_name is None or len(info.shape) != 2 or sys.byteorder != "little":
            return self.read(name).to(other.dtype) - other
        dtype = getattr(torch, dtype_name)
        out = torch.empty(info.shape, dtype=other.dtype)
        row_bytes = info.shape[1] * torch.empty((), dtype=dtype).element_size()
        step = max(1, _BLOCK_BYTES // max(1, row_bytes))
        with open(info.file, "rb") as fh:
            start = _data_start(fh, name)
            for i in range(0, info.shape[0], step):
                n = min(step, info.shape[0] - i)
                fh.seek(start + i * row_bytes)
                block = bytearray(fh.read(n * row_bytes))
                if len(block) != n * row_bytes:
                    raise EvalkitError(f"{info.file} is truncated (tensor {name})")
                rows = torch.frombuffer(block, dtype=dtype).view(n, info.shape[1])
                torch.sub(rows.to(other.dtype), other[i:i + n], out=out[i:i + n])
        return out


_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _data_start(fh: Any, name: str) -> int:
    """Absolute file offset of tensor ``name``'s bytes in an open safetensors file."""
    header_len = int.from_bytes(fh.read(8), "little")
    header = json.loads(fh.read(header_len))
    return 8 + header_len + header[name]["data_offsets"][0]


def weight_files(folder: Path) -> list[Path]:
    """The shards named by ``model.safetensors.index.json``, else every ``*.safetensors``.

    Some hub folders also carry the same weights under another naming (Mistral's
    ``consolidated.safetensors``); the index says which files the model really uses."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise EvalkitError(f"{index} is malformed: {exc}") from None
        missing = [s for s in shards if not (folder / s).exists()]
        if missing:
            raise EvalkitError(f"{index} names missing shards: {', '.join(missing[:3])}")
        return [folder / s for s in shards]
    return sorted(folder.glob("*.safetensors"))


@dataclass
class LoraModule:
    base_key: str  # the base tensor it updates, e.g. model.layers.0.self_attn.q_proj.weight
    a_key: str
    b_key: str
    r: int
    alpha: float
    scale: float
    transpose: bool  # embeddings and fan_in_fan_out layers store ΔW transposed


@dataclass
class LoraAdapter:
    """A PEFT LoRA adapter folder, indexed by the base tensors it changes."""

    folder: Path
    config: dict
    files: ModelFiles
    modules: dict[str, LoraModule] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)  # modules_to_save: base key → key

    @classmethod
    def load(cls, folder: Path, config: dict, base_names: set[str]) -> LoraAdapter:
        peft_type = str(config.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise EvalkitError(f"adapter {folder} is {peft_type}; evalkit analyzes LoRA adapters")
        if config.get("use_dora"):
            raise EvalkitError(f"adapter {folder} uses DoRA, which `evalkit analyze` cannot merge")
        files = ModelFiles(folder, [folder / "adapter_model.safetensors"])
        adapter = cls(folder=folder, config=config, files=files)
        pairs: dict[str, dict[str, str]] = {}
        for key in files.names():
            mod, part = _split_lora_key(key)
            if part is None:
                # modules_to_save tensors; PEFT also saves the (possibly resized) base weight of
                # a LoRA-targeted embedding as X.base_layer.weight.
                base_key = _strip_prefix(key).replace(".base_layer.", ".")
                if base_key not in base_names:
                    raise EvalkitError(f"adapter tensor {key} matches no tensor of the base model")
                adapter.replaced[base_key] = key
            elif part in ("A", "B", "embedding_A", "embedding_B"):
                pairs.setdefault(mod, {})[part[-1]] = key
                pairs[mod]["embedding"] = str(part.startswith("embedding"))
            else:
                raise EvalkitError(f"adapter tensor {key} ({part}) is not supported by evalkit")
        for mod, p in sorted(pairs.items()):
            if "A" not in p or "B" not in p:
                raise EvalkitError(f"adapter {folder}: module {mod} lacks lora_A or lora_B")
            base_key = f"{mod}.weight"
            if base_key not in base_names:
                raise EvalkitError(f"adapter module {mod} matches no tensor of the base model")
            r = files.index[p["A"]].shape[0]
            alpha = float(_pattern_value(config.get("alpha_pattern") or {}, mod,
                                         config.get("lora_alpha", 8)))
            scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
            adapter.modules[base_key] = LoraModule(
                base_key=base_key, a_key=p["A"], b_key=p["B"], r=r, alpha=alpha, scale=scale,
                transpose=p["embedding"] == "True" or bool(config.get("fan_in_fan_out")),
            )
        return adapter

    def delta(self, base_key: str, dtype: torch.dtype) -> torch.Tensor | None:
        """scale·B·A for one base tensor (None when the adapter does not touch it)."""
        m = self.modules.get(base_key)
        if m is None:
            return None
        a = self.files.read(m.a_key).to(dtype)
        b = self.files.read(m.b_key).to(dtype)
        d = (b @ a) * m.scale
        return d.T if m.transpose else d

    def describe(self) -> dict:
        scales = sorted({m.scale for m in self.modules.values()})
        ranks = sorted({m.r for m in self.modules.values()})
        return {
            "r": self.config.get("r"),
            "lora_alpha": self.config.get("lora_alpha"),
            "use_rslora": bool(self.config.get("use_rslora")),
            "scale": scales[0] if len(scales) == 1 else None,
            "scales": scales,
            "ranks": ranks,
            "rank_pattern": self.config.get("rank_pattern") or {},
            "alpha_pattern": self.config.get("alpha_pattern") or {},
            "target_modules": self.config.get("target_modules"),
            "modules": len(self.modules),
            "modules_to_save": sorted(self.replaced),
        }


def _strip_prefix(key: str) -> str:
    return key.removeprefix("base_model.model.")


def _split_lora_key(key: str) -> tuple[str, str | None]:
    """``base_model.model.X.lora_A.weight`` → (``X``, ``A``); non-LoRA keys → (key, None)."""
    parts = _strip_prefix(key).split(".")
    for i, p in enumerate(parts):
        if p.startswith("lora_"):
            return ".".join(parts[:i]), p.removeprefix("lora_")
    return key, None


def _pattern_value(patterns: dict, module: str, default: float) -> float:
    """PEFT's rank/alpha pattern lookup: a key matches a module name or its dotted suffix."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


class WeightSource:
    """One checkpoint as a stream of tensors: a model folder, or a model plus a LoRA adapter."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.files = ModelFiles(checkpoint.model_path)
        self.lora: LoraAdapter | None = None
        if checkpoint.kind == "adapter":
            self.lora = LoraAdapter.load(checkpoint.path, checkpoint.adapter_config,
                                         set(self.files.index))

    @property
    def fingerprint(self) -> str:
        """Content key of the weights this source yields (base model + adapter, if any)."""
        c = self.checkpoint
        if c.base is None:
            return c.fingerprint
        return hashlib.sha256(f"{c.base.fingerprint}+{c.fingerprint}".encode()).hexdigest()

    def names(self) -> list[str]:
        return self.files.names()

    def info(self, name: str) -> TensorInfo:
        return self.files.index[name]

    def delta(self, name: str, dtype: torch.dtype) -> torch.Tensor | None:
        """What the adapter changes in the model tensor ``name`` (None: nothing)."""
        if self.lora is None:
            return None
        d = self.lora.delta(name, dtype)
        if name in self.lora.replaced:  # modules_to_save: a whole new tensor (+ LoRA, if any)
            new = self.lora.files.read(self.lora.replaced[name]).to(dtype)
            replaced = new - self.read_model(name, dtype)
            d = replaced if d is None else replaced + d
        return d

    def read_model(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        return self.files.read(name).to(dtype)

    def read(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """The tensor as the checkpoint's model sees it (adapter merged), in ``dtype``."""
        if self.lora is not None and name in self.lora.replaced:
            w = self.lora.files.read(self.lora.replaced[name]).to(dtype)
        else:
            w = self.read_model(name, dtype)
        d = self.lora.delta(name, dtype) if self.lora is not None else None
        return w if d is None else w + d

    def read_minus(self, name: str, other: torch.Tensor) -> torch.Tensor:
        """``read(name, other.dtype) - other`` without holding the whole tensor next to it."""
        if self.lora is None:
            return self.files.read_minus(name, other)
        return self.read(name, other.dtype) - other

    def storage_dtype(self, name: str) -> str:
        return self.files.index[name].dtype


def _adapter_on_base(base: WeightSource, tuned: WeightSource) -> bool:
    return (base.lora is None and tuned.lora is not None
            and base.files.folder.resolve() == tuned.files.folder.resolve())


def read_pair(base: WeightSource, tuned: WeightSource, name: str, dtype: torch.dtype
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_b, W_t, ΔW) for one tensor. When TUNED is an adapter on BASE's own weights, the model
    tensor is read once and ΔW is the adapter's update itself (exact, no cancellation)."""
    if _adapter_on_base(base, tuned):
        w_b, d = read_delta(base, tuned, name, dtype)
        return w_b, w_b + d, d
    w_b = base.read(name, dtype)
    w_t = tuned.read(name, dtype)
    return w_b, w_t, w_t - w_b


def read_delta(base: WeightSource, tuned: WeightSource, name: str, dtype: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_b, ΔW) for one tensor, holding two matrices rather than three: W_t is read block by
    block into ΔW (W_t = W_b + ΔW, to float rounding, for whoever needs it)."""
    if _adapter_on_base(base, tuned):
        w_b = base.read_model(name, dtype)
        d = tuned.delta(name, dtype)
        return w_b, _zeros_like(w_b) if d is None else d
    w_b = base.read(name, dtype)
    return w_b, tuned.read_minus(name, w_b)


def _zeros_like(w: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.zeros_like(w)


@dataclass
class Selection:
    names: list[str]
    skipped: list[dict]  # {"name", "shape", "reason"}


def select_matrices(base: WeightSource, tuned: WeightSource, *, modules: list[str] | None = None,
                    include_embeddings: bool = False) -> Selection:
    """The matrices to analyse, and every other tensor with the reason it is skipped."""
    import fnmatch

    names, skipped = [], []
    base_names = set(base.names())
    tuned_names = set(tuned.names())
    for name in _ordered(base_names | tuned_names):
        shape_b = base.info(name).shape if name in base_names else None
        shape_t = tuned.info(name).shape if name in tuned_names else None
        shape = list(shape_t or shape_b or ())
        reason = None
        if shape_b is None:
            reason = "only in TUNED"
        elif shape_t is None:
            reason = "only in BASE"
        elif shape_b != shape_t:
            reason = f"shape mismatch: BASE {list(shape_b)} vs TUNED {list(shape_t)}"
        elif len(shape_t) != 2:
            reason = f"not 2-D ({len(shape_t)}-D)"
        elif is_embedding(name):
            if not include_embeddings:
                reason = "embedding / LM head (pass --include-embeddings)"
        elif layer_index(name) is None:
            reason = "outside the transformer blocks"
        if reason is None and modules and not any(
            module_name(name) == m or fnmatch.fnmatchcase(name, m) for m in modules
        ):
            reason = "not in --modules"
        if reason:
            skipped.append({"name": name, "shape": shape, "reason": reason})
        else:
            names.append(name)
    return Selection(names=names, skipped=skipped)


def _ordered(names: set[str]) -> list[str]:
    """Embeddings first, then blocks in layer order, then the rest; stable within each."""
    def key(n: str):
        layer = layer_index(n)
        return (0 if layer is None and is_embedding(n) and "lm_head" not in n else
                1 if layer is not None else 2, layer or 0, n)
    return sorted(names, key=key)


def adapter_info(source: WeightSource) -> dict | None:
    return source.lora.describe() if source.lora is not None else None


def config_layers(folder: Path) -> int | None:
    """``num_hidden_layers`` (or an equivalent) from a model folder's config.json."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    config = config.get("text_config", config)
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    return None
