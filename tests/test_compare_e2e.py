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


def test_compare_base_vs_lora(tmp_path, adapter):
    from evalkit.models.merged_lora import merges_adapters

    # vLLM-CPU serves the adapter merged into a cached copy, in an engine of its own (its LoRA
    # ops are slow); elsewhere ONE engine serves base and adapter.
    merged = merges_adapters("vllm")
    tasks = os.environ.get("EVALKIT_E2E_TASKS", "gsm8k,humaneval")
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "compare", "builtin:smollm2-135m", str(adapter),
         "--tasks", tasks, "--limit", "6", "--out", str(out), "--runs-dir",
         str(tmp_path / "runs"), "--no-cache"],
        capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]

    comparison = json.loads((out / "comparison.json").read_text())
    assert {r["task"] for r in comparison["rows"]} == set(tasks.split(","))
    for row in comparison["rows"]:
        assert row["n_items"] == 6 and row["verdict"] in (
            "improved", "regressed", "no significant change")
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("run.json")]
    assert len(runs) == 2 * len(tasks.split(","))
    engines = {kind: {r["backend"]["engine_id"] for r in runs if r["checkpoint"]["kind"] == kind}
               for kind in ("model", "adapter")}
    assert all(len(ids) == 1 and None not in ids for ids in engines.values())  # one per side
    assert (engines["model"] == engines["adapter"]) is not merged
    lora = {r["backend"]["options"].get("lora")
            for r in runs if r["checkpoint"]["kind"] == "adapter"}
    assert lora == {"merged" if merged else "native"}  # run.json says which path ran
    assert (out / "comparison.md").read_text().startswith("#")
    # the engines' own output went to the log, not the terminal
    assert (tmp_path / "runs" / "engine.log").stat().st_size > 0
    assert "INFO" not in proc.stderr
