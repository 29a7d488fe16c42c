"""Oracle matrices of analyzers.md, built into tiny float64 safetensors checkpoints.

Each oracle's expected value is a closed form or a number measured independently (numpy,
float64), never a number produced by evalkit.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

DIAG64 = np.diag(np.linspace(10, 1, 64))  # U_b = I, well-separated σ (gap 1/7)


def write_model(folder: Path, tensors: dict[str, np.ndarray | torch.Tensor], layers: int = 8
                ) -> Path:
    """A model folder evalkit resolves: config.json + one safetensors file."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.tensor(np.asarray(v)) for k, v in tensors.items()},  # copies: no sharing
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "oracle",
                                                    "num_hidden_layers": layers}))
    return folder


def orthogonal(n: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def oracle_a() -> tuple[np.ndarray, np.ndarray]:
    """Square: a huge rank-1 boost along u spread over the last 32 coordinates."""
    u = np.zeros(64)
    u[32:] = 1 / math.sqrt(32)
    return DIAG64, DIAG64 + 1000 * np.outer(u, u)


def tall_base(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """96×32 W_b = U0[:, :32]·diag(s)·V0ᵀ; U0[:, 32:] is orthogonal to its column space."""
    u0, v0 = orthogonal(96, seed), orthogonal(32, seed + 1)
    s = np.linspace(10, 1, 32)
    return u0[:, :32] @ np.diag(s) @ v0.T, u0, v0, s


def oracle_b(lam: float, j: int = 3) -> tuple[np.ndarray, np.ndarray, float, float]:
    """W_t = W_b + λ·u·v_jᵀ, u ⟂ col(W_b): (W_b, W_t, expected max|cos|, expected σ)."""
    w_b, u0, v0, s = tall_base()
    w_t = w_b + lam * np.outer(u0[:, 32], v0[:, j])
    sigma = math.sqrt(s[j] ** 2 + lam**2)
    return w_b, w_t, s[j] / sigma, sigma


def oracle_c() -> tuple[np.ndarray, np.ndarray]:
    """Boost the base's SMALLEST direction: it becomes the top one, but it is a base vector."""
    e = np.zeros(64)
    e[-1] = 1
    return DIAG64, DIAG64 + 100 * np.outer(e, e)


def oracle_d() -> tuple[np.ndarray, np.ndarray]:
    """Three orthogonal out-of-column-space directions with λ ≫ σ_max."""
    w_b, u0, v0, _ = tall_base()
    w_t = w_b.copy()
    for i, lam in enumerate((300.0, 200.0, 100.0)):
        w_t += lam * np.outer(u0[:, 32 + i], v0[:, i])
    return w_b, w_t


def oracle_noise() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return DIAG64, DIAG64 + 1e-3 * rng.standard_normal((64, 64))


def intruder_models(root: Path) -> tuple[Path, Path, dict]:
    """BASE/TUNED holding oracles A, B (λ=20 and λ=15), C, D and noise in separate layers, plus
    a norm and an embedding (to be skipped). Returns (base, tuned, expectations)."""
    a_b, a_t = oracle_a()
    b_b, b_t, b_cos, b_sigma = oracle_b(20.0)
    b2_b, b2_t, b2_cos, b2_sigma = oracle_b(15.0)
    c_b, c_t = oracle_c()
    d_b, d_t = oracle_d()
    n_b, n_t = oracle_noise()
    names = {
        "A": "model.layers.0.self_attn.q_proj.weight",
        "B": "model.layers.1.mlp.up_proj.weight",
        "B15": "model.layers.2.mlp.up_proj.weight",
        "C": "model.layers.3.self_attn.o_proj.weight",
        "D": "model.layers.4.mlp.gate_proj.weight",
        "noise": "model.layers.5.self_attn.v_proj.weight",
    }
    pairs = {"A": (a_b, a_t), "B": (b_b, b_t), "B15": (b2_b, b2_t), "C": (c_b, c_t),
             "D": (d_b, d_t), "noise": (n_b, n_t)}
    extra = {"model.embed_tokens.weight": np.ones((16, 8)),
             "model.layers.0.input_layernorm.weight": np.ones(64)}
    base = write_model(root / "oracle-base", {**{names[k]: v[0] for k, v in pairs.items()},
                                              **extra})
    tuned = write_model(root / "oracle-tuned", {**{names[k]: v[1] for k, v in pairs.items()},
                                                **extra})
    expect = {"names": names, "pairs": pairs, "b_cos": b_cos, "b_sigma": b_sigma,
              "b15_cos": b2_cos, "b15_sigma": b2_sigma}
    return base, tuned, expect


def make_tiny_llama(path: Path, **kwargs) -> Path:
    """tests/conftest.py's tiny random llama (loaded by path: two conftest modules exist)."""
    import importlib.util

    conftest = Path(__file__).resolve().parent.parent / "conftest.py"
    spec = importlib.util.spec_from_file_location("_evalkit_root_conftest", conftest)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tiny_llama(path, **kwargs)


def run_cli(*args: object) -> int:
    """Run `evalkit ARGS` in-process, as the console script does; return the exit code."""
    from evalkit.cli import main

    old = sys.argv
    sys.argv = ["evalkit", *map(str, args)]
    try:
        main()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
