"""lm-eval interop: ``lm_eval:NAME`` tasks, ``import lm-eval``, ``export --format lm-eval``.

The reference is lm-eval 0.4.13 itself: its ``simple_evaluate`` with its own HF backend on a
tiny llama, reading the same local data through task YAMLs written here (lm-eval's own
``dataset_path: json``/``csv`` mechanism, the user-folder route of ``--lm-eval-include``),
including a small nested ``mmlu`` group over the shared MMLU CSVs.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from test_cli_errors import assert_clean_error, evalkit

from evalkit.run.format import load_run
from evalkit.run.runner import RunOptions, open_backend, run_task

lm_eval = pytest.importorskip("lm_eval")
LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
LIMIT = 4
MAX_GEN = 24  # gsm8k: short generations keep the tiny model's greedy run cheap


def _yaml(folder: Path, name: str, include: str, files: dict[str, Path]) -> None:
    kind = "csv" if all(p.suffix == ".csv" for p in files.values()) else "json"
    lines = [f"include: {LM_EVAL_TASKS / include}", f"task: {name}", f"dataset_path: {kind}",
             "dataset_name: null", "dataset_kwargs:", "  data_files:"]
    lines += [f"    {split}: {path}" for split, path in files.items()]
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")


# A small `mmlu` group over the shared MMLU CSVs, nested as lm-eval's own (a subgroup inside the
# group, each with lm-eval's size-weighted aggregate). The CSVs have choice0..choice3 where the
# hub has `choices`, hence doc_to_text; 5-shot from dev as in evalkit's native mmlu.
MMLU_SUBJECTS = ("abstract_algebra", "anatomy", "astronomy")
SHORT_SUBJECT = "astronomy"  # cut to 2 documents: the group's subtasks differ in size
MMLU_GROUP = """group: mmlu
task:
  - mmlu_abstract_algebra
  - group: mmlu_stem_mini
    task: [mmlu_anatomy, mmlu_astronomy]
    aggregate_metric_list: [{metric: acc, weight_by_size: true}]
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
metadata: {version: 2}
"""


def write_include(folder: Path, data_dir: Path) -> Path:
    """A user task folder: lm-eval's arc_easy, gsm8k and a 3-subject `mmlu` group on the shared
    local files."""
    arc = {s: data_dir / f"arc/ARC-Easy-{s}.jsonl" for s in ("train", "validation", "test")}
    _yaml(folder, "arc_easy", "arc/arc_easy.yaml", arc)
    gsm = {s: data_dir / f"gsm8k/{s}.jsonl" for s in ("train", "test")}
    _yaml(folder, "gsm8k", "gsm8k/gsm8k.yaml", gsm)
    for subject in MMLU_SUBJECTS:
        name = f"mmlu_{subject}"
        _yaml(folder, name, f"mmlu/default/{name}.yaml",
              {s: data_dir / f"mmlu/{s}/{subject}_{s}.csv" for s in ("dev", "test")})
        with (folder / f"{name}.yaml").open("a") as f:
            f.write("doc_to_text: \"{{question.strip()}}\\nA. {{choice0}}\\nB. {{choice1}}"
                    "\\nC. {{choice2}}\\nD. {{choice3}}\\nAnswer:\"\nnum_fewshot: 5\n")
            if subject == SHORT_SUBJECT:
                f.write("process_docs: !function mmlu_utils.first_two\n")
    # lm-eval applies process_docs to every split: keep dev's 5 rows whole (the shots).
    (folder / "mmlu_utils.py").write_text("def first_two(dataset):\n    return dataset if "
                                          "len(dataset) <= 5 else dataset.select(range(2))\n")
    (folder / "mmlu.yaml").write_text(MMLU_GROUP)
    return folder


def _mmlu_size(subject: str) -> int:
    return 2 if subject == SHORT_SUBJECT else LIMIT


MMLU_ITEMS = sum(map(_mmlu_size, MMLU_SUBJECTS))


@pytest.fixture(scope="module")
def include(tmp_path_factory, data_dir) -> Path:
    return write_include(tmp_path_factory.mktemp("lm_eval_tasks"), data_dir)


@pytest.fixture(scope="module")
def env(include):
    mp = pytest.MonkeyPatch()
    mp.setenv("EVALKIT_LM_EVAL_INCLUDE", str(include))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def reference(tiny_llama, include, tmp_path_factory):
    """lm-eval itself (HF backend) on the tasks and the mmlu group, its output written as
    `lm_eval` writes it."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    out = tmp_path_factory.mktemp("lm_eval_out")
    tracker = EvaluationTracker(output_path=str(out))
    results = simple_evaluate(
        model="hf", model_args=f"pretrained={tiny_llama},dtype=float32", device="cpu",
        tasks=["arc_easy", "gsm8k", "mmlu"], task_manager=TaskManager(include_path=str(include)),
        limit=LIMIT, log_samples=True, batch_size=4, gen_kwargs=f"max_gen_toks={MAX_GEN}",
        evaluation_tracker=tracker)
    samples = results.pop("samples")
    # lm-eval's writer turns the samples it saves into strings in place: save copies.
    tracker.save_results_aggregated(results=results, samples=copy.deepcopy(samples))
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=copy.deepcopy(samples[task]))
    return results, samples, out


@pytest.fixture(scope="module")
def ours(tiny_llama, env, tmp_path_factory):
    """The same tasks and group through evalkit (hf backend, one engine)."""
    from evalkit.checkpoints import resolve

    ckpt = resolve(str(tiny_llama))
    options = RunOptions(backend="hf", limit=LIMIT, max_tokens=MAX_GEN, progress=False,
                         out_dir=tmp_path_factory.mktemp("runs"),
                         backend_options={"batch_size": 4, "dtype": "float32"})
    with open_backend(ckpt, options) as backend:
        return {t: run_task(ckpt, f"lm_eval:{t}", options, backend=backend)
                for t in ("arc_easy", "gsm8k", "mmlu")}


def _by_doc(samples: list[dict], flt: str) -> dict[int, dict]:
    return {s["doc_id"]: s for s in samples if s["filter"] == flt}


def test_arc_easy_per_item_equals_lm_evals_hf(reference, ours):
    results, samples, _ = reference
    ref = _by_doc(samples["arc_easy"], "none")
    run, records, metrics = load_run(ours["arc_easy"]).dicts()
    assert len(records) == len(ref) == LIMIT
    for r in records:
        s = ref[int(r["doc_id"])]
        assert r["prompt_hash"] == s["prompt_hash"] and r["doc_hash"] == s["doc_hash"]
        assert r["scores"] == {"acc,none": s["acc"], "acc_norm,none": s["acc_norm"]}
        for (lp, greedy), ((ref_lp, ref_greedy),) in zip(r["filtered_resps"]["none"],
                                                         s["resps"], strict=True):
            assert math.isclose(lp, ref_lp, rel_tol=1e-4, abs_tol=1e-4) and greedy == ref_greedy
    for key in ("acc,none", "acc_norm,none"):
        assert metrics["metrics"][key]["value"] == results["results"]["arc_easy"][key]
    assert run["task"]["version"] == str(results["versions"]["arc_easy"])
    assert run["lm_eval"]["config"]["task"] == "arc_easy" and run["task"]["config_hash"]


def test_gsm8k_generations_and_scores_equal_lm_evals_hf(reference, ours):
    _, samples, _ = reference
    _, records, _ = load_run(ours["gsm8k"]).dicts()
    assert len(records) == LIMIT
    for flt in ("strict-match", "flexible-extract"):
        ref = _by_doc(samples["gsm8k"], flt)
        for r in records:
            s = ref[int(r["doc_id"])]
            assert r["prompt_hash"] == s["prompt_hash"]
            assert r["completion"] == s["resps"][0][0]
            assert r["filtered_resps"][flt] == s["filtered_resps"]
            assert r["scores"][f"exact_match,{flt}"] == s["exact_match"]


def test_mmlu_group_items_and_aggregate_equal_lm_evals_hf(reference, ours):
    """`lm_eval:mmlu` (a group with a nested subgroup): one run folder whose items are every
    subtask's, each scored as lm-eval scores it, and whose acc is lm-eval's own group
    aggregate (size-weighted mean, pooled stderr), the subgroup's too."""
    results, samples, _ = reference
    run, records, metrics = load_run(ours["mmlu"]).dicts()
    assert len(records) == MMLU_ITEMS == sum(len(samples[f"mmlu_{s}"]) for s in MMLU_SUBJECTS)
    assert len({r["doc_id"] for r in records}) == MMLU_ITEMS  # unique: compare pairs them
    for r in records:
        leaf, _, doc_id = r["doc_id"].partition("/")
        s = _by_doc(samples[leaf], "none")[int(doc_id)]
        assert r["lm_eval"]["task"] == leaf
        assert r["prompt_hash"] == s["prompt_hash"] and r["doc_hash"] == s["doc_hash"]
        assert r["scores"] == {"acc,none": s["acc"]}
        for (lp, greedy), ((ref_lp, ref_greedy),) in zip(r["filtered_resps"]["none"],
                                                         s["resps"], strict=True):
            assert math.isclose(lp, ref_lp, rel_tol=1e-4, abs_tol=1e-4) and greedy == ref_greedy
    ref = results["results"]
    acc = metrics["metrics"]["acc,none"]
    assert acc["n"] == MMLU_ITEMS
    assert acc["value"] == pytest.approx(ref["mmlu"]["acc,none"], rel=1e-12, abs=1e-15)
    assert acc["stderr"] == pytest.approx(ref["mmlu"]["acc_stderr,none"], rel=1e-12)
    subgroup = run["lm_eval"]["subtasks"]["mmlu::mmlu_stem_mini"]["results"]
    assert subgroup["acc,none"] == pytest.approx(ref["mmlu::mmlu_stem_mini"]["acc,none"])
    # The sizes differ, so the size-weighted mean is not the mean of the subtasks' accs: a
    # run that averaged the subtasks unweighted could not pass the equalities above.
    leaf_accs = [ref[f"mmlu_{s}"]["acc,none"] for s in MMLU_SUBJECTS]
    assert not math.isclose(sum(leaf_accs) / len(leaf_accs), ref["mmlu"]["acc,none"])
    assert run["task"]["name"] == "lm_eval:mmlu" and run["task"]["version"] == "2"


def test_native_mmlu_agrees_with_lm_eval_mmlu_item_by_item(ours):
    """evalkit's own mmlu builds the same prompts and scores lm_eval:mmlu's loglikelihoods
    alike, item by item, on the subjects both have."""
    from evalkit.tasks import load_task

    mmlu = load_task("mmlu")
    native = {d.id: d for d in mmlu.docs(LIMIT)}
    _, records, _ = load_run(ours["mmlu"]).dicts()
    for r in records:
        leaf, _, doc_id = r["doc_id"].partition("/")
        doc = native[f"{leaf.removeprefix('mmlu_')}/{doc_id}"]
        assert mmlu.prompt(doc) == r["prompt"]
        assert _native_scores(mmlu, doc, r) == r["scores"]


def _native_scores(task, doc, record: dict) -> dict:
    """The native task's scores of the loglikelihoods lm-eval's requests got, under lm-eval's
    ``"metric,filter"`` keys."""
    from evalkit.models.base import Loglikelihood
    from evalkit.scoring.loglikelihood import LoglikelihoodInput

    results = [Loglikelihood(logprob=lp, is_greedy=g, n_tokens=1)
               for ((lp, g),) in record["lm_eval"]["resps"]]
    conts = [a[1] for a in record["lm_eval"]["arguments"]]
    score = task.scorer.score_loglikelihood(LoglikelihoodInput(
        doc=doc.data, continuations=conts, results=results,
        choices=task.choices(doc.data), gold=task.gold(doc.data)))
    return {f"{k},none": v for k, v in score.values.items()}


def test_native_tasks_agree_with_lm_eval_versions_on_the_same_answers(ours):
    """evalkit's own gsm8k / arc_easy score lm_eval:'s completions and loglikelihoods alike."""
    from evalkit.scoring import ScoreInput
    from evalkit.tasks import load_task

    gsm = load_task("gsm8k")
    docs = gsm.docs(LIMIT)
    _, records, _ = load_run(ours["gsm8k"]).dicts()
    for doc, r in zip(docs, records, strict=True):
        assert gsm.prompt(doc) == r["prompt"]
        score = gsm.scorer(ScoreInput(doc=doc.data, prompt=r["prompt"],
                                      completion=r["completion"], target=gsm.target(doc)))
        assert score.values == {k: v for k, v in r["scores"].items()}

    arc = load_task("arc_easy")
    _, records, _ = load_run(ours["arc_easy"]).dicts()
    for doc, r in zip(arc.docs(LIMIT), records, strict=True):
        assert arc.prompt(doc) == r["prompt"]
        assert _native_scores(arc, doc, r) == r["scores"]


def test_import_pairs_with_evalkit_run(reference, ours, tmp_path):
    from evalkit.compare.load import load_run as load_pairable
    from evalkit.compare.rows import compare_runs

    _, _, out = reference
    proc = evalkit("import", "lm-eval", str(out), "--out", str(tmp_path / "imported"))
    assert proc.returncode == 0, proc.stderr
    imported = {Path(p).parent.name: Path(p) for p in proc.stdout.split()}
    assert set(imported) == {"lm_eval:arc_easy", "lm_eval:gsm8k", "lm_eval:mmlu"}
    pairs = [(load_pairable(imported[f"lm_eval:{t}"]), load_pairable(ours[t]))
             for t in ("arc_easy", "gsm8k", "mmlu")]
    comparison = compare_runs(pairs, resamples=1000)
    assert {(r.task, r.metric) for r in comparison.rows} >= {
        ("lm_eval:arc_easy", "acc,none"), ("lm_eval:gsm8k", "exact_match,strict-match"),
        ("lm_eval:mmlu", "acc,none")}
    for row in comparison.rows:  # the group pairs its items across its subtasks
        n = MMLU_ITEMS if row.task == "lm_eval:mmlu" else LIMIT
        assert row.n_items == n and row.delta == pytest.approx(0.0, abs=1e-12)
        assert row.verdict in ("no significant change", "untested"), row


def test_export_reads_in_lm_eval_and_reimports_to_the_same_run(ours, tmp_path):
    from lm_eval.utils import make_table

    proc = evalkit("export", str(ours["arc_easy"]), str(ours["gsm8k"]), str(ours["mmlu"]),
                   "--format", "lm-eval", "-o", str(tmp_path / "exp"))
    assert proc.returncode == 0, proc.stderr
    (results_file,) = (tmp_path / "exp").glob("results_*.json")
    results = json.loads(results_file.read_text())
    table = make_table(results)
    assert "arc_easy" in table and "acc_norm" in table and "strict-match" in table
    assert "mmlu::mmlu_stem_mini" in table and " - anatomy" in table  # lm-eval's group tree
    assert results["group_subtasks"]["mmlu::mmlu_stem_mini"] == ["mmlu_anatomy", "mmlu_astronomy"]
    assert "mmlu" in make_table(results, "groups")
    for subject in MMLU_SUBJECTS:  # the group's samples go back to one file per subtask
        (leaf_file,) = (tmp_path / "exp").glob(f"samples_mmlu_{subject}_*.jsonl")
        assert len(leaf_file.read_text().splitlines()) == _mmlu_size(subject)
    lines = [json.loads(x) for x in next((tmp_path / "exp").glob("samples_gsm8k_*.jsonl"))
             .read_text().splitlines()]
    assert len(lines) == 2 * LIMIT  # one per doc and filter, as lm-eval logs them
    assert set(lines[0]) >= {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps",
                             "filter", "metrics", "exact_match", "doc_hash", "prompt_hash",
                             "target_hash"}
    proc = evalkit("import", "lm-eval", str(tmp_path / "exp"), "--out", str(tmp_path / "re"))
    assert proc.returncode == 0, proc.stderr
    for folder in map(Path, proc.stdout.split()):
        _, records, metrics = load_run(folder).dicts()
        original_folder = ours[folder.parent.name.removeprefix("lm_eval:")]
        _, original, original_metrics = load_run(original_folder).dicts()
        assert records == original and metrics == original_metrics


def test_bad_inputs_exit_2_with_one_line(reference, tmp_path, tiny_llama, env):
    _, _, out = reference
    no_samples = tmp_path / "no_samples"
    no_samples.mkdir()
    (results_file,) = out.rglob("results_*.json")
    (no_samples / results_file.name).write_text(results_file.read_text())
    assert_clean_error(evalkit("import", "lm-eval", str(no_samples), "--out", str(tmp_path / "a")),
                       "per-sample logging", tmp_path / "a")
    old = json.loads(results_file.read_text())
    old["lm_eval_version"] = "0.3.0"
    other = tmp_path / "old"
    other.mkdir()
    (other / results_file.name).write_text(json.dumps(old))
    assert_clean_error(evalkit("import", "lm-eval", str(other), "--out", str(tmp_path / "b")),
                       "lm-eval 0.3.0", tmp_path / "b")
    assert_clean_error(evalkit("run", "-m", str(tiny_llama), "--backend", "hf", "--task",
                               "lm_eval:arc_eazy", "--out", str(tmp_path / "c")),
                       "unknown lm-eval task 'arc_eazy'", tmp_path / "c")


@pytest.mark.slow
def test_killed_lm_eval_run_resumes_without_redoing_answered_items(tmp_path, tiny_llama, include):
    """kill -9 in the middle of an lm_eval: run; the rerun (no shared cache) answers only the
    requests the run folder's journal lacks, then scores all of them."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from evalkit.run.lm_eval import ANSWERS

    n = 8
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "evalkit", "run", "--model", str(tiny_llama), "--task",
           "lm_eval:gsm8k", "--limit", str(n), "--backend", "hf", "--batch-size", "1",
           "--max-tokens", "16", "--out", str(out), "--no-cache",
           "--lm-eval-include", str(include)]

    def answered(journal: Path) -> int:
        with sqlite3.connect(journal, timeout=60) as db:
            try:
                return int(db.execute("SELECT count(*) FROM gen").fetchone()[0])
            except sqlite3.OperationalError:  # the table is not created yet
                return 0

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    journal = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list(out.glob(f"lm_eval:gsm8k/*/{ANSWERS}"))
        if found and answered(found[0]) >= 2:
            journal = found[0]
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert journal is not None, "the run never journaled an answer before it ended"
    folder = journal.parent
    assert json.loads((folder / "run.json").read_text())["status"] == "running"
    assert not (folder / "metrics.json").exists()
    kept = answered(journal)
    assert 2 <= kept < n, "the kill came too late to test anything"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run, records, metrics = load_run(folder).dicts()
    assert run["status"] == "complete" and len(records) == n
    assert run["counts"]["resumed"] == kept and run["counts"]["generated"] == n - kept
    assert metrics["metrics"]["exact_match,strict-match"]["n"] == n
    assert not (folder / ANSWERS).exists()  # the samples hold every answer now


def test_imported_run_with_other_prompts_is_refused(reference, tiny_llama, include, tmp_path):
    """lm-eval's own arc_easy run, imported, against an evalkit run of the same task, items and
    settings whose prompt template was edited: the prompt hashes differ, compare refuses."""
    _, _, out = reference
    proc = evalkit("import", "lm-eval", str(out), "--out", str(tmp_path / "imported"))
    assert proc.returncode == 0, proc.stderr
    (imported,) = [Path(p) for p in proc.stdout.split() if "arc_easy" in p]
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "arc_easy.yaml").write_text(f"include: {include / 'arc_easy.yaml'}\n"
                                          "task: arc_easy\ndoc_to_text: \"Q: {{question}}\\nA:\"\n")
    proc = evalkit("run", "-m", str(tiny_llama), "--backend", "hf", "--task", "lm_eval:arc_easy",
                   "--limit", str(LIMIT), "--lm-eval-include", str(edited),
                   "--out", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    (ours_run,) = (tmp_path / "runs").glob("lm_eval:arc_easy/*/")
    proc = evalkit("compare", str(imported), str(ours_run), "--runs",
                   "--out", str(tmp_path / "cmp"))
    assert_clean_error(proc, f"prompts differ on {LIMIT} of {LIMIT} items", tmp_path / "cmp")
    assert "the prompt template differs" in proc.stderr
