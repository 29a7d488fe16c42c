"""`evalkit compare` end to end on the embedded model, with a LoRA adapter made here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, builtin_model):
    """A LoRA adapter of the builtin with non-zero, seeded weights (so outputs change)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(builtin_model.path)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)  # B random instead of 0: a real update
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)  # small enough to keep the model talking
    path = tmp_path_factory.mktemp("adapter") / "lora"
    peft_model.save_pretrained(path)
    return path


def test_compare_base_vs_lora_uses_one_engine(tmp_path, adapter):
    tasks = os.environ.get("EVALKIT_E2E_TASKS", "gsm8k,humaneval")
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "compare", "builtin:smollm2-135m", str(adapter),
         "--tasks", tasks, "--limit", "6", "--out", str(out), "--runs-dir",
         str(tmp_path / "runs"), "--no-cache"],
        capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("starting vllm engine") == 1, "base and adapter need ONE engine"

    comparison = json.loads((out / "comparison.json").read_text())
    assert {r["task"] for r in comparison["rows"]} == set(tasks.split(","))
    for row in comparison["rows"]:
        assert row["n_items"] == 6 and row["verdict"] in (
            "improved", "regressed", "no significant change")
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("run.json")]
    assert len(runs) == 2 * len(tasks.split(","))
    engines = {r["backend"]["engine_id"] for r in runs}
    assert len(engines) == 1 and None not in engines  # every run went through the same engine
    kinds = sorted(r["checkpoint"]["kind"] for r in runs)
    assert kinds.count("adapter") == kinds.count("model")
    assert (out / "comparison.md").read_text().startswith("#")
