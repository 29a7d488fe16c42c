"""Fixtures shared across the suite: data dir, an isolated cache, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_models import make_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("EVALKIT_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()
os.environ["EVALKIT_DATA_DIR"] = str(DATA_DIR)
# One cache for the whole session (the builtin model is converted once), never the user's.
os.environ.setdefault("EVALKIT_CACHE_DIR", str(ROOT / ".pytest_cache" / "evalkit-cache"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.exists():
        pytest.fail(f"benchmark data not found at {DATA_DIR}; set EVALKIT_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def builtin_model():
    """The embedded SmolLM2-135M-Instruct, materialized once per session."""
    from evalkit.checkpoints import resolve

    return resolve("builtin:smollm2-135m")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, builtin_model) -> Path:
    """A tiny random llama with the builtin's tokenizer (works in transformers and vLLM)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama",
                           tokenizer_from=builtin_model.path)
