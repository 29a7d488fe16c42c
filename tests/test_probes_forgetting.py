"""Forgetting probes: conjugate tasks, recovery on planted runs, suites, and the whole loop
(`evalkit compare --tasks forgetting`) on two tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evalkit.compare.load import load_run
from evalkit.compare.recovery import recovery
from evalkit.compare.rows import compare_runs
from evalkit.errors import EvalkitError
from evalkit.tasks import load_task
from evalkit.tasks.suites import expand_tasks
from evalkit.testing import make_run_folder

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ conjugate tasks


def test_conjugate_task_asks_the_same_items_another_way():
    plain, conj = load_task("mmlu"), load_task("forgetting_mmlu_conj_format")
    assert conj.spec.conjugate.of == "mmlu"
    # inherited: data, ids, groups, scorer; its own: prompt, choices, shots' format
    assert [d.id for d in conj.docs(1)] == [d.id for d in plain.docs(1)]
    assert conj.spec.group_by == "subject" and conj.spec.scorer.name == "multiple_choice"
    doc = plain.docs(1)[3]
    a, b = plain.prompt(doc), conj.prompt(doc)
    assert a != b and doc.data["question"].strip() in b
    assert b.endswith("Correct option: (")
    assert [x for _, x in conj.loglikelihood_pairs(doc, b)] == ["1", "2", "3", "4"]
    assert conj.gold(doc.data) == plain.gold(doc.data)
    assert conj.spec.prompt_template_hash() != plain.spec.prompt_template_hash()


def test_translate_transform_overlays_fields_from_the_users_file(tmp_path):
    rows = [{"doc_id": "Mercury_7175875", "question": "Un astronome observe ..."},
            {"doc_id": "not-a-doc", "question": "?"}]
    (tmp_path / "fr.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "arc_challenge_fr.yaml").write_text(
        "name: arc_challenge_fr\nversion: '1.0'\n"
        "conjugate: {of: arc_challenge, transform: translate, file: " + str(tmp_path / "fr.jsonl")
        + "}\nprompt: \"Question : {{question}}\\nRéponse :\"\n")
    task = load_task(str(tmp_path / "arc_challenge_fr.yaml"))
    docs = task.docs()
    assert [d.id for d in docs] == ["Mercury_7175875"]  # only translated items are asked
    assert task.prompt(docs[0]) == "Question : Un astronome observe ...\nRéponse :"
    assert docs[0].data["choices"] == load_task("arc_challenge").docs(1)[0].data["choices"]


def test_conjugate_of_an_unknown_task_is_a_clear_error(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nconjugate: {of: no_such_task}\n")
    with pytest.raises(EvalkitError, match=r"conjugate.of.*no task 'no_such_task'"):
        load_task(str(path))


# ----------------------------------------------------- recovery on planted run pairs


def _plant(root: Path, task: str, base: list[float], tuned: list[float]) -> tuple:
    b = make_run_folder(root / "base" / task, {str(i): v for i, v in enumerate(base)},
                        task=task, checkpoint="base")
    t = make_run_folder(root / "tuned" / task, {str(i): v for i, v in enumerate(tuned)},
                        task=task, checkpoint="tuned")
    return load_run(b), load_run(t)


def test_recovery_on_a_planted_pair_of_runs(tmp_path):
    n = 40
    # plain prompt: base right on all 40, tuned loses 20 (forgetting 50 pp);
    # conjugate prompt: base right on 36, tuned loses 5 of those (conjugate loss 12.5 pp)
    plain = _plant(tmp_path, "mmlu", [1.0] * n, [0.0] * 20 + [1.0] * 20)
    conj = _plant(tmp_path, "forgetting_mmlu_conj_format", [1.0] * 36 + [0.0] * 4,
                  [0.0] * 5 + [1.0] * 31 + [0.0] * 4)
    comparison = compare_runs([plain, conj], resamples=2000)
    (row,) = recovery(comparison)
    assert (row.plain, row.conjugate, row.metric, row.n_items) == (
        "mmlu", "forgetting_mmlu_conj_format", "acc", n)
    assert row.forgetting == pytest.approx(0.5)
    assert row.conjugate_loss == pytest.approx(5 / 40)
    assert row.recovery == pytest.approx(0.5 - 0.125)
    assert row.recovered_share == pytest.approx(0.375 / 0.5)
    assert row.recovery_ci[0] > 0 and row.recovery_ci[0] < 0.375 < row.recovery_ci[1]
    assert row.plain_verdict == "regressed" and row.verdict == "suppressed"
    # it is in comparison.json and the markdown
    assert comparison.recovery[0].verdict == "suppressed"
    from evalkit.compare.render import comparison_markdown

    assert "| mmlu → forgetting_mmlu_conj_format | `acc` | 40 | +50.0 | +12.5 | +37.5" in \
        comparison_markdown(comparison)


def test_a_loss_the_conjugate_prompt_shows_too_is_forgotten(tmp_path):
    lost = [0.0] * 20 + [1.0] * 20
    plain = _plant(tmp_path, "mmlu", [1.0] * 40, lost)
    conj = _plant(tmp_path, "forgetting_mmlu_conj_format", [1.0] * 40, lost)
    (row,) = recovery(compare_runs([plain, conj], resamples=2000))
    assert row.recovery == 0.0 and row.recovered_share == 0.0
    assert row.verdict == "forgotten"


def test_no_forgetting_no_verdict_on_recovery(tmp_path):
    rng = np.random.default_rng(0)
    same = list(rng.integers(0, 2, 40).astype(float))
    plain = _plant(tmp_path, "mmlu", same, same)
    conj = _plant(tmp_path, "forgetting_mmlu_conj_format", same, same)
    (row,) = recovery(compare_runs([plain, conj], resamples=2000))
    assert row.forgetting == 0.0 and row.recovered_share is None
    assert row.verdict == "no significant forgetting"


def test_no_share_is_printed_for_forgetting_inside_the_noise(tmp_path):
    # tuned loses 2 of 40 on the plain prompt (not significant) and gains 3 on the conjugate
    # one: recovery / forgetting = 250%, which the tables must not present as a finding.
    plain = _plant(tmp_path, "mmlu", [1.0] * 20 + [0.0] * 20, [0.0] * 2 + [1.0] * 18 + [0.0] * 20)
    conj = _plant(tmp_path, "forgetting_mmlu_conj_format", [0.0] * 20 + [1.0] * 20,
                  [1.0] * 3 + [0.0] * 17 + [1.0] * 20)
    comparison = compare_runs([plain, conj], resamples=2000)
    (row,) = recovery(comparison)
    assert row.verdict == "no significant forgetting"
    assert row.recovered_share == pytest.approx((0.05 + 0.075) / 0.05)  # kept in the JSON
    from evalkit.compare.render import comparison_markdown

    line = next(x for x in comparison_markdown(comparison).splitlines()
                if x.startswith("| mmlu → forgetting_mmlu_conj_format"))
    assert "| — | no significant forgetting |" in line and "250%" not in line


def test_recovery_pairs_only_items_both_prompts_asked(tmp_path):
    plain = _plant(tmp_path, "mmlu", [1.0] * 10, [0.0] * 10)
    b = make_run_folder(tmp_path / "cb", {str(i): 1.0 for i in range(5)},
                        task="forgetting_mmlu_conj_format", checkpoint="base")
    t = make_run_folder(tmp_path / "ct", {str(i): 1.0 for i in range(5)},
                        task="forgetting_mmlu_conj_format", checkpoint="tuned")
    (row,) = recovery(compare_runs([plain, (load_run(b), load_run(t))], resamples=2000))
    assert row.n_items == 5 and row.recovery == pytest.approx(1.0)


# ----------------------------------------------------------------------------- suites


def test_forgetting_suite_expands_with_default_limits():
    tasks, limits = expand_tasks(["forgetting"])
    assert tasks == ["mmlu", "forgetting_mmlu_conj_format", "arc_easy", "arc_challenge",
                     "forgetting_arc_challenge_conj_format", "wikitext"]
    assert limits["mmlu"] == 1 and limits["wikitext"] == 3
    for t in tasks:
        load_task(t)  # every task of the suite exists


def test_suites_nest_and_keep_order_without_duplicates():
    tasks, limits = expand_tasks(["gsm8k", "finetunebench", "finetunebench_fictional_people"])
    assert tasks[0] == "gsm8k" and len(tasks) == len(set(tasks)) == 11
    assert limits == {}


def test_a_suite_that_includes_itself_is_refused(tmp_path, monkeypatch):
    (tmp_path / "suites.yml").write_text("a: {tasks: {b: null}}\nb: {tasks: {a: 3}}\n")
    monkeypatch.setenv("EVALKIT_TASKS_PATH", str(tmp_path))
    from evalkit.tasks import _index

    _index.cache_clear()
    with pytest.raises(EvalkitError, match="includes itself"):
        expand_tasks(["a"])


# ------------------------------------------------------------ the loop, end to end


def _evalkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "evalkit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_compare_the_forgetting_suite_on_two_tiny_models(tmp_path, tiny_llama, builtin_model,
                                                         data_dir):
    from tiny_models import make_tiny_llama

    other = make_tiny_llama(tmp_path / "other", seed=1, tokenizer_from=builtin_model.path)
    result = _evalkit("compare", str(tiny_llama), str(other), "--tasks", "forgetting",
                      "--limit", "2", "--backend", "hf", "--runs-dir", str(tmp_path / "runs"),
                      "--out", str(tmp_path / "cmp"), "--resamples", "1000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    rows = {(r["task"], r["metric"]) for r in comparison["rows"]}
    assert {("mmlu", "acc"), ("forgetting_mmlu_conj_format", "acc"), ("arc_easy", "acc_norm"),
            ("wikitext", "bits_per_byte,doc_mean")} <= rows
    assert not any(m.startswith("acc,") for _, m in rows)  # per-subject values: runs only
    assert [(r["plain"], r["conjugate"]) for r in comparison["recovery"]] == [
        ("mmlu", "forgetting_mmlu_conj_format"),
        ("arc_challenge", "forgetting_arc_challenge_conj_format")]
    assert "conjugate-prompt recovery" in result.stdout
    assert comparison["notes"] == []
    mmlu = next(r for r in comparison["rows"] if r["task"] == "mmlu")
    assert mmlu["n_items"] == 2 * 57  # --limit is per subject


def test_run_a_suite_with_its_limits_or_yours(tmp_path, tiny_llama, data_dir):
    (tmp_path / "suites.yml").write_text("tiny: {tasks: {arc_easy: 3, arc_challenge: 1}}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EVALKIT_TASKS_PATH": str(tmp_path)}

    def run(*extra: str) -> dict[str, int]:
        out = tmp_path / f"runs{len(extra)}"
        result = subprocess.run([sys.executable, "-m", "evalkit", "run", "-m", str(tiny_llama),
                                 "--task", "tiny", "--backend", "hf", "--out", str(out), *extra],
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return {f.parent.parent.name: json.loads(f.read_text())["counts"]["docs"]
                for f in out.glob("*/*/run.json")}

    assert run() == {"arc_easy": 3, "arc_challenge": 1}
    assert run("--limit", "2") == {"arc_easy": 2, "arc_challenge": 2}
