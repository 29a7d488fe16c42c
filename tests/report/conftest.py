"""Report inputs made by evalkit itself: run folders (evalkit.testing), a real comparison of
them, a results store, a real `evalkit analyze` folder of two tiny checkpoints, and a fine-tune
manifest written through its pydantic schema. Completions carry the hostile inputs of issue 15.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# Model output that must stay inert text: script tags, a tag break-out with an event handler,
# template syntax (jinja2 would evaluate it if a completion were ever rendered as a template),
# a right-to-left override and terminal escapes.
XSS = ('<script>window.__pwned=1;alert("x")</script></pre><img id="pwn" src=x '
       'onerror="window.__pwned=2;alert(2)">{{ 7*7 }}{% if true %}JINJA{% endif %}'
       '\u202egnp.exe\x1b[31mRED\x1b[0m')
TASKS = ("gsm8k", "humaneval", "arc_easy", "finetunebench_fictional_people_memorization")
N_ITEMS = 40


@dataclass
class Inputs:
    root: Path
    base_runs: Path
    tuned_runs: Path
    compare: Path
    store: Path
    analysis: Path
    finetune: Path


def _tiny_model(folder: Path, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny",
                                                    "num_hidden_layers": 3}))
    return folder


def _analysis(root: Path) -> Path:
    """A real `evalkit analyze` of a base and a tuned model that differ by a rank-1 update."""
    from evalkit.cli import main

    rng = np.random.default_rng(0)
    base, tuned = {}, {}
    for layer in range(3):
        for module in ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj"):
            w = rng.standard_normal((32, 32))
            u, v = rng.standard_normal(32), rng.standard_normal(32)
            name = f"model.layers.{layer}.{module}.weight"
            base[name] = w
            tuned[name] = w + (30.0 * layer) * np.outer(u, v) / 32
    b = _tiny_model(root / "tiny-base", base)
    t = _tiny_model(root / "tiny-tuned", tuned)
    out = root / "analysis"
    import sys

    argv = sys.argv
    sys.argv = ["evalkit", "analyze", str(b), str(t), "--dtype", "float64", "--out", str(out),
                "--quiet", "--no-cache"]
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        sys.argv = argv
    return out


def _finetune(root: Path) -> Path:
    from evalkit.finetune.schema import MANIFEST_NAME, BaseInfo, DataInfo, LoraInfo, Manifest

    folder = root / "tuned-ckpt"
    folder.mkdir()
    losses = [round(2.5 * 0.97**i + 0.05 * ((i * 7) % 5) / 5, 6) for i in range(60)]
    manifest = Manifest(
        evalkit_version="0.1.0", kind="adapter", method="lora",
        base=BaseInfo(spec="builtin:smollm2-135m", fingerprint="f" * 64, path="/x"),
        data=DataInfo(spec="finetunebench:fictional_people", fingerprint="d" * 16,
                      format="qa", examples=120, tokens=9000, target_tokens=2000,
                      truncated=0, dropped=0),
        seed=0, hyperparameters={"learning_rate": 0.001, "epochs": 3, "batch_size": 8},
        lora=LoraInfo(rank=16, alpha=32, rslora=False, scaling=2.0, dropout=0.0,
                      target_modules="all-linear"),
        trainable_params=10, total_params=100, processes=1, effective_batch_size=8,
        steps=len(losses), final_loss=losses[-1], loss_history=losses, tokens_per_second=1.0,
        wall_time_s=1.0, versions={}, created_at="2026-01-01T00:00:00+00:00")
    (folder / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
    return folder


def make_inputs(root: Path, n_items: int = N_ITEMS) -> Inputs:
    from evalkit.compare import compare_paths, write_comparison
    from evalkit.testing import make_run_folder

    rnd = random.Random(0)
    for task in TASKS:
        base = {str(i): float(rnd.random() < 0.4) for i in range(n_items)}
        tuned = {str(i): float(rnd.random() < 0.6) for i in range(n_items)}
        # Item 1 flips in both directions across the tasks; the hostile text is on both sides.
        base["1"], tuned["1"] = (1.0, 0.0) if task == "gsm8k" else (0.0, 1.0)
        make_run_folder(root / "runs/base" / task, base, task=task, checkpoint="base-model",
                        completions={"1": XSS})
        make_run_folder(root / "runs/tuned" / task, tuned, task=task, checkpoint="tuned-model",
                        completions={"1": XSS})
    comparison = compare_paths(root / "runs/base", root / "runs/tuned", seed=0, resamples=1000)
    write_comparison(comparison, root / "compare")
    from evalkit.cli.report import publish_paths

    publish_paths([root / "compare"], root / "results")
    return Inputs(root=root, base_runs=root / "runs/base", tuned_runs=root / "runs/tuned",
                  compare=root / "compare", store=root / "results",
                  analysis=_analysis(root), finetune=_finetune(root))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    return make_inputs(tmp_path_factory.mktemp("report-inputs"))


@pytest.fixture
def xss() -> str:
    return XSS
