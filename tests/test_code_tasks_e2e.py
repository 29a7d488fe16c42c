"""`evalkit run` on the code tasks end to end: the embedded model on vLLM, the real sandbox.

One CLI run (one engine) does humaneval, mbpp and humaneval_instruct greedily on 2 items, and a
sampled copy of humaneval (n=5, pass@1..5) whose metrics.json must equal the closed form
computed here from its samples.jsonl.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evalkit.run.format import load_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory, builtin_model) -> dict[str, tuple[dict, list[dict], dict]]:
    tmp = tmp_path_factory.mktemp("code-e2e")
    sampled = yaml.safe_load((ROOT / "tasks/humaneval.yaml").read_text())
    sampled.update(name="humaneval_k5")
    sampled["generation"].update(n=5, temperature=0.8, top_p=0.95)
    sampled["scorer"]["k"] = [1, 2, 3, 4, 5, 10]
    task_file = tmp / "humaneval_k5.yaml"
    task_file.write_text(yaml.safe_dump(sampled))
    out = tmp / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "run", "--model", "builtin:smollm2-135m",
         "--task", f"humaneval,mbpp,humaneval_instruct,{task_file}", "--limit", "2",
         "--max-tokens", "160", "--out", str(out)],
        capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("starting vllm engine") <= 1
    folders = {p.parent.parent.name: p.parent for p in out.rglob("metrics.json")}
    assert set(folders) == {"humaneval", "mbpp", "humaneval_instruct", "humaneval_k5"}
    return {name: load_run(folder).dicts() for name, folder in folders.items()}


@pytest.mark.parametrize("task", ["humaneval", "mbpp", "humaneval_instruct"])
def test_greedy_runs_are_complete_and_explain_each_sample(runs, task):
    run, samples, metrics = runs[task]
    assert run["status"] == "complete" and run["generation"]["n"] == 1
    assert len(samples) == 2
    for s in samples:
        e = s["execution"]
        assert e["status"] in ("passed", "failed", "timeout", "oom", "output_limit")
        assert e["detail"] and e["wall_s"] >= 0 and s["scores"]["passed"] == float(
            e["status"] == "passed")
        if e["program"] is not None:  # only a chat reply without a code block has none
            assert s["completion"].strip() == "" or (
                s["completion"] in e["program"] or s["extracted"]["code"] in e["program"])
    m = metrics["metrics"]
    assert set(m) == {"pass@1"} and m["pass@1"]["n"] == 2
    assert m["pass@1"]["value"] == sum(s["scores"]["passed"] for s in samples) / 2


def test_humaneval_program_is_prompt_completion_test(runs):
    _, samples, _ = runs["humaneval"]
    s = samples[0]
    assert s["execution"]["program"].endswith(s["completion"] + "\n" + s["target"])


def test_sampled_pass_at_k_equals_the_closed_form(runs):
    run, samples, metrics = runs["humaneval_k5"]
    assert run["generation"]["n"] == 5 and run["generation"]["temperature"] == 0.8
    by_item: dict[str, list[float]] = {}
    for s in samples:
        by_item.setdefault(s["doc_id"], []).append(s["scores"]["passed"])
    assert sorted(len(v) for v in by_item.values()) == [5, 5]
    m = metrics["metrics"]
    assert sorted(m) == [f"pass@{k}" for k in range(1, 6)]  # k=10 > n=5 is not reported
    for k in range(1, 6):
        per_item = [1 - math.comb(5 - int(sum(v)), k) / math.comb(5, k)
                    for v in by_item.values()]
        assert m[f"pass@{k}"]["value"] == pytest.approx(sum(per_item) / 2)
        assert m[f"pass@{k}"]["n"] == 2


def test_mbpp_runs_completion_then_asserts(runs):
    _, samples, _ = runs["mbpp"]
    for s in samples:
        assert s["execution"]["program"].endswith(s["completion"] + "\n" + s["target"])
        assert s["target"].startswith("assert ")  # the asserts, not the reference solution
        assert s["prompt"].count("[BEGIN]") == 4 and s["prompt"].count("[DONE]") == 3
