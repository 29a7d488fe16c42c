"""Paired comparison of run folders: planted regressions, self-comparison, refusals, outputs.

Every fixture is a real run folder (run.json, samples.jsonl, metrics.json) written from
hand-made sample records whose outcomes are known, so the expected flips, counts and p-values
follow from the construction, not from the code under test.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from rich.console import Console

import evalkit.compare as cmp
from evalkit.errors import EvalkitError
from evalkit.stats import holm
from evalkit.testing import make_run_folder

N_ITEMS = 200
# Deterministic "base model" outcomes: items whose id is divisible by 3 or 5 are right.
BASE = {str(i): float(i % 3 == 0 or i % 5 == 0) for i in range(N_ITEMS)}
PLANTED_REGRESSIONS = [d for d in BASE if BASE[d] == 1.0][5:30]  # 25 items
PLANTED_IMPROVEMENTS = [d for d in BASE if BASE[d] == 0.0][:3]


def _binom_two_sided(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def _planted() -> dict[str, float]:
    tuned = dict(BASE)
    for d in PLANTED_REGRESSIONS:
        tuned[d] = 0.0
    for d in PLANTED_IMPROVEMENTS:
        tuned[d] = 1.0
    return tuned


@pytest.fixture
def planted(tmp_path):
    base = make_run_folder(tmp_path / "base" / "toy", BASE, checkpoint="base-model",
                           completions={d: f"BASE ANSWER {d}" for d in BASE})
    tuned = make_run_folder(tmp_path / "tuned" / "toy", _planted(), checkpoint="tuned-model",
                            completions={d: f"TUNED ANSWER {d}" for d in BASE})
    return base, tuned


# ------------------------------------------------------------------------ planted regression


def test_planted_regression_is_detected_with_the_right_items(planted):
    comp = cmp.compare_paths(*planted)
    (row,) = comp.rows
    assert row.verdict == "regressed"
    assert (row.b, row.c) == (25, 3)
    assert row.test == "mcnemar-exact"
    assert row.p_value == pytest.approx(_binom_two_sided(25, 3), rel=1e-9)
    assert row.p_holm == pytest.approx(row.p_value)  # one row: Holm changes nothing
    assert sorted(row.regressions, key=int) == sorted(PLANTED_REGRESSIONS, key=int)
    assert sorted(row.improvements, key=int) == sorted(PLANTED_IMPROVEMENTS, key=int)
    base_acc = sum(BASE.values()) / N_ITEMS
    assert row.base == pytest.approx(base_acc)
    assert row.delta == pytest.approx((3 - 25) / N_ITEMS)
    assert row.ci_low < row.delta < row.ci_high < 0
    assert row.n_items == N_ITEMS and row.n_excluded == 0


def test_flipped_items_carry_both_completions_side_by_side(planted):
    comp = cmp.compare_paths(*planted)
    items = {i.doc_id: i for i in comp.tasks[0].flipped}
    assert set(items) == set(PLANTED_REGRESSIONS) | set(PLANTED_IMPROVEMENTS)
    doc = PLANTED_REGRESSIONS[0]
    item = items[doc]
    assert item.flips == {"acc": "regression"}
    assert item.values["acc"] == (1.0, 0.0)
    assert item.base.completion == f"BASE ANSWER {doc}"
    assert item.tuned.completion == f"TUNED ANSWER {doc}"
    assert item.base.extracted == {"answer": f"base-model:{doc}:0"}
    assert item.target == f"target {doc}"
    # Regressions come first in the list people read.
    kinds = [next(iter(i.flips.values())) for i in comp.tasks[0].flipped]
    assert kinds == ["regression"] * 25 + ["improvement"] * 3


# --------------------------------------------------------------------------- self-comparison


def test_self_comparison_reports_no_change_on_every_row(tmp_path):
    multi = {str(i): [float(i % 2), float(i % 3 == 0), 1.0] for i in range(60)}
    metrics = {"pass@1": {"aggregation": "pass@k", "score_key": "acc", "k": 1},
               "pass@2": {"aggregation": "pass@k", "score_key": "acc", "k": 2}}
    gen = {"max_tokens": 64, "temperature": 0.8, "top_p": 0.95, "n": 3, "until": []}
    for side in ("a", "b"):
        make_run_folder(tmp_path / side / "toy", BASE, checkpoint="same")
        make_run_folder(tmp_path / side / "code", multi, task="code", metrics=metrics,
                        generation=gen, checkpoint="same")
    for base, tuned in ((tmp_path / "a", tmp_path / "b"), (tmp_path / "a", tmp_path / "a")):
        comp = cmp.compare_paths(base, tuned)
        assert [(r.task, r.metric) for r in comp.rows] == [
            ("code", "pass@1"), ("code", "pass@2"), ("toy", "acc")]
        for row in comp.rows:
            assert row.verdict == "no significant change"
            assert row.delta == 0 and row.ci_low <= 0 <= row.ci_high
            if row.test == "mcnemar-exact":  # Newcombe's interval keeps the Wilson widths
                assert row.ci_low == -row.ci_high < 0
            else:  # every bootstrap resample of all-zero differences is 0
                assert (row.ci_low, row.ci_high) == (0.0, 0.0)
            assert row.p_value == 1.0
            assert row.regressions == row.improvements == []
        assert comp.summary()["no significant change"] == 3


# ------------------------------------------------------------------------ several tasks, Holm


def test_holm_is_applied_across_all_rows_of_a_comparison(tmp_path):
    # Task "small": 6 items only tuned gets right -> McNemar p = 2/64 = 0.03125 < 0.05 alone.
    small_base = {str(i): 0.0 for i in range(20)}
    small_tuned = {str(i): float(i < 6) for i in range(20)}
    make_run_folder(tmp_path / "b" / "small", small_base, task="small")
    make_run_folder(tmp_path / "t" / "small", small_tuned, task="small")
    alone = cmp.compare_paths(tmp_path / "b", tmp_path / "t")
    assert alone.rows[0].p_value == pytest.approx(2 / 64)
    assert alone.rows[0].verdict == "improved"

    # Two more tasks without any change: m = 3, so Holm multiplies the smallest p by 3.
    for name in ("same1", "same2"):
        make_run_folder(tmp_path / "b" / name, BASE, task=name)
        make_run_folder(tmp_path / "t" / name, BASE, task=name)
    comp = cmp.compare_paths(tmp_path / "b", tmp_path / "t")
    by_task = {r.task: r for r in comp.rows}
    assert by_task["small"].p_value == pytest.approx(2 / 64)  # raw p unchanged
    assert by_task["small"].p_holm == pytest.approx(3 * 2 / 64)
    assert by_task["small"].verdict == "no significant change"
    np.testing.assert_allclose([r.p_holm for r in comp.rows],
                               holm([r.p_value for r in comp.rows]))
    # Each row's CI is seeded by (seed, task, metric): unaffected by the other tasks.
    assert (by_task["small"].ci_low, by_task["small"].ci_high) == (
        alone.rows[0].ci_low, alone.rows[0].ci_high)


def test_tasks_filter_and_unpaired_tasks(tmp_path):
    make_run_folder(tmp_path / "b" / "x", BASE, task="x")
    make_run_folder(tmp_path / "b" / "y", BASE, task="y")
    make_run_folder(tmp_path / "t" / "x", BASE, task="x")
    comp = cmp.compare_paths(tmp_path / "b", tmp_path / "t")
    assert [r.task for r in comp.rows] == ["x"]
    assert any("'y' only in base" in n for n in comp.notes)
    with pytest.raises(EvalkitError, match="task 'y' has no run on the tuned side"):
        cmp.compare_paths(tmp_path / "b", tmp_path / "t", tasks=["x", "y"])


# ---------------------------------------------------------------- pass@k and unscorable items


def test_pass_at_k_rows_use_per_item_estimates_and_cluster_by_item(tmp_path):
    metrics = {"pass@1": {"aggregation": "pass@k", "score_key": "passed", "k": 1},
               "pass@2": {"aggregation": "pass@k", "score_key": "passed", "k": 2}}
    gen = {"max_tokens": 64, "temperature": 0.8, "top_p": 0.95, "n": 3, "until": []}
    base = {"0": [1.0, 0.0, 1.0], "1": [0.0, 0.0, 0.0], "2": [1.0, 1.0, 1.0]}
    tuned = {"0": [0.0, 0.0, 1.0], "1": [0.0, 1.0, 0.0], "2": [1.0, 1.0, 1.0]}
    kw = {"task": "code", "score_key": "passed", "metrics": metrics, "generation": gen}
    make_run_folder(tmp_path / "b", base, **kw)
    make_run_folder(tmp_path / "t", tuned, **kw)
    comp = cmp.compare_paths(tmp_path / "b", tmp_path / "t")
    rows = {r.metric: r for r in comp.rows}
    # pass@1 per item = c/n: base (2/3, 0, 1), tuned (1/3, 1/3, 1)
    assert rows["pass@1"].base == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert rows["pass@1"].tuned == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    # pass@2 = 1 - C(n-c,2)/C(3,2): base (1, 0, 1), tuned (2/3, 2/3, 1)
    assert rows["pass@2"].base == pytest.approx(2 / 3)
    assert rows["pass@2"].tuned == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert rows["pass@1"].test == "permutation"  # per-item values are not 0/1
    assert rows["pass@1"].regressions == ["0"] and rows["pass@1"].improvements == ["1"]
    # The regression shows a passing base sample and a failing tuned sample.
    item = next(i for i in comp.tasks[0].flipped if i.doc_id == "0")
    assert item.base.scores["passed"] == 1.0 and item.tuned.scores["passed"] == 0.0
    assert item.base.n_samples == 3


def test_lower_is_better_metric_flips_the_direction(tmp_path):
    metrics = {"error_rate": {"aggregation": "mean", "score_key": "err",
                              "higher_is_better": False}}
    base = {str(i): 0.0 for i in range(40)}
    tuned = {str(i): float(i < 12) for i in range(40)}  # 12 new errors
    make_run_folder(tmp_path / "b", base, score_key="err", metrics=metrics)
    make_run_folder(tmp_path / "t", tuned, score_key="err", metrics=metrics)
    (row,) = cmp.compare_paths(tmp_path / "b", tmp_path / "t").rows
    assert row.verdict == "regressed"
    assert (row.b, row.c) == (12, 0)  # b = base better
    assert len(row.regressions) == 12


# ------------------------------------------------------------------------------- refusals


def _pair(tmp_path, base_kw=None, tuned_kw=None, base=BASE, tuned=BASE):
    b = make_run_folder(tmp_path / "b", base, **(base_kw or {}))
    t = make_run_folder(tmp_path / "t", tuned, **(tuned_kw or {}))
    return b, t


@pytest.mark.parametrize(("base_kw", "tuned_kw", "message"), [
    ({}, {"version": "2.0"}, r"versions differ \(1\.0 in base vs 2\.0 in tuned\)"),
    ({}, {"generation": {"max_tokens": 64, "temperature": 0.2, "top_p": 1.0, "n": 1,
                         "until": []}},
     r"generation settings differ, base vs tuned \(temperature: 0\.0 vs 0\.2\)"),
    ({}, {"prompt_salt": " (chat)"}, r"prompts differ on 200 of 200 items.*prompt template"),
    ({}, {"task": "other"}, "different tasks: 'toy' vs 'other'"),
    ({}, {"metrics": {"other": {"score_key": "acc"}}}, "metric 'acc' is missing from the tuned"),
    ({}, {"metrics": {"acc": {"score_key": "acc", "higher_is_better": False}}},
     "metric 'acc' is defined differently"),
])
def test_unpairable_runs_are_refused_with_a_clear_error(tmp_path, base_kw, tuned_kw, message):
    b, t = _pair(tmp_path, base_kw, tuned_kw)
    with pytest.raises(EvalkitError, match=message):
        cmp.compare_runs([(cmp.load_run(b), cmp.load_run(t))])


def test_different_item_sets_are_refused(tmp_path):
    b, t = _pair(tmp_path, tuned={d: v for d, v in BASE.items() if int(d) < 100})
    with pytest.raises(EvalkitError, match=r"different items.*100 only in base.*same --limit"):
        cmp.compare_paths(b, t)


def test_one_prompt_differing_is_named(tmp_path):
    b, t = _pair(tmp_path)
    lines = (t / "samples.jsonl").read_text().splitlines()
    record = json.loads(lines[7])
    record["prompt_hash"] = "f" * 16
    lines[7] = json.dumps(record)
    (t / "samples.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalkitError, match=r"prompts differ on 1 of 200 items, e\.g\. doc '7'"):
        cmp.compare_paths(b, t)


def test_unfinished_runs_are_refused(tmp_path):
    running = make_run_folder(tmp_path / "running", BASE, status="running")
    with pytest.raises(EvalkitError, match=r"not a finished run \(status 'running'\)"):
        cmp.load_run(running)
    done = make_run_folder(tmp_path / "done", BASE)
    (done / "metrics.json").unlink()
    with pytest.raises(EvalkitError, match=r"not a finished run \(no metrics\.json\)"):
        cmp.load_run(done)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda f: (f / "run.json").write_text("{not json"), "run.json is not valid JSON"),
    (lambda f: (f / "metrics.json").write_text('{"schema_version": 1}'), "malformed metrics.json"),
    (lambda f: (f / "samples.jsonl").write_text('{"doc_id": "1"}\n'), "samples.jsonl:1"),
    (lambda f: (f / "samples.jsonl").unlink(), "has no samples.jsonl"),
    (lambda f: (f / "run.json").write_text(
        (f / "run.json").read_text().replace('"schema_version": 1', '"schema_version": 9')),
     "run format version 9 is not supported"),
])
def test_malformed_run_folders_give_one_clear_error(tmp_path, damage, message):
    folder = make_run_folder(tmp_path / "r", BASE)
    damage(folder)
    with pytest.raises(EvalkitError, match=message):
        cmp.load_run(folder)


def test_load_runs_refuses_ambiguous_and_empty_folders(tmp_path):
    make_run_folder(tmp_path / "runs" / "one", BASE)
    make_run_folder(tmp_path / "runs" / "two", BASE)  # same task "toy" again
    with pytest.raises(EvalkitError, match="two runs of task 'toy'"):
        cmp.load_runs(tmp_path / "runs")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalkitError, match="holds no run folders"):
        cmp.load_runs(tmp_path / "empty")
    with pytest.raises(EvalkitError, match="does not exist"):
        cmp.load_runs(tmp_path / "missing")


# -------------------------------------------------------------------------------- outputs


def _no_nan(text: str):
    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=refuse)


def test_comparison_json_round_trip_and_schema(planted, tmp_path):
    comp = cmp.compare_paths(*planted)
    json_path, md_path = cmp.write_comparison(comp, tmp_path / "out")
    raw = _no_nan(json_path.read_text())
    assert raw["schema_version"] == 1 and raw["kind"] == "evalkit.comparison"
    assert raw["settings"]["correction"] == "holm" and raw["settings"]["resamples"] == 10_000
    assert set(raw["rows"][0]) >= {"task", "metric", "base", "tuned", "delta", "ci_low",
                                   "ci_high", "test", "p_value", "p_holm", "verdict", "n_items",
                                   "b", "c", "regressions", "improvements"}
    again = cmp.load_comparison(json_path)
    assert again == comp
    # The stored per-item values make a comparison re-analysable without the run folders.
    reloaded = cmp.compare_paths(json_path, json_path)  # base side vs tuned side
    assert reloaded.rows[0].p_value == comp.rows[0].p_value
    assert md_path.read_text().startswith("### evalkit compare")


def test_markdown_summary_is_pr_comment_sized(tmp_path):
    many = 600
    base = {str(i): 1.0 for i in range(many)}
    tuned = {str(i): 0.0 for i in range(many)}
    long_text = {str(i): "x = 1\n" * 400 for i in range(many)}
    make_run_folder(tmp_path / "b", base, completions=long_text)
    make_run_folder(tmp_path / "t", tuned, completions=long_text)
    comp = cmp.compare_paths(tmp_path / "b", tmp_path / "t")
    text = cmp.comparison_markdown(comp)
    assert len(text) <= 60_000
    assert "| toy | `acc` | 600 | 100.0% | 0.0% | -100.0 pp | [-100.0, -99.1] pp |" in text
    assert "<details>" in text and "600 regressed items" in text
    assert "more characters" in text  # completions are clipped


def test_tables_show_bits_per_byte_in_its_own_units(tmp_path):
    # A perplexity-type metric is not a rate: 0.931 bits/byte must not print as "93.1%".
    spec = {"bits_per_byte,doc_mean": {"higher_is_better": False}}
    base = {str(i): 0.9 + 0.01 * (i % 5) for i in range(20)}
    tuned = {d: v + 0.05 for d, v in base.items()}
    b = make_run_folder(tmp_path / "b", base, score_key="bits_per_byte,doc_mean", metrics=spec)
    t = make_run_folder(tmp_path / "t", tuned, score_key="bits_per_byte,doc_mean", metrics=spec)
    comp = cmp.compare_paths(b, t)
    row = comp.rows[0]
    assert row.verdict == "regressed"  # lower is better and every document got worse
    text = cmp.comparison_markdown(comp)
    assert f"| {row.base:.4g} | {row.tuned:.4g} | +0.05 | [+0.05, +0.05] |" in text
    assert "%" not in text.split("| toy |")[1].split("\n")[0]
    console = Console(record=True, width=200)
    console.print(cmp.comparison_table(comp))
    assert "0.92" in console.export_text() and "92.0" not in console.export_text()


@pytest.mark.parametrize(("n", "has_ci"), [(3, False), (5, False), (6, True)])
def test_no_ci_where_too_few_items_changed_for_any_test(tmp_path, n, has_ci):
    # The demo's WikiText row: 3 documents, all worse. A bootstrap of 3 differences never leaves
    # their range, so its interval excluded 0 while the permutation test said p = 2/2**3 = 0.25.
    spec = {"bits_per_byte,doc_mean": {"higher_is_better": False}}
    base = {str(i): 0.9 + 0.01 * i for i in range(n)}
    tuned = {d: v + 0.06 + 0.005 * int(d) for d, v in base.items()}
    b = make_run_folder(tmp_path / "b", base, score_key="bits_per_byte,doc_mean", metrics=spec)
    t = make_run_folder(tmp_path / "t", tuned, score_key="bits_per_byte,doc_mean", metrics=spec)
    comp = cmp.compare_paths(b, t)
    (row,) = comp.rows
    assert row.p_value == pytest.approx(2 / 2**n)  # every item in one direction: the extreme
    assert (row.verdict == "regressed") is has_ci  # 2/2**6 = 0.031; 2/2**5 = 0.0625
    text = cmp.comparison_markdown(comp)
    if has_ci:
        assert row.ci_low is not None and row.ci_low > 0  # consistent with the verdict
        assert "fewer than" not in text
    else:
        assert row.ci_low is None and row.ci_high is None
        assert "| — | permutation |" in text
        assert "none where fewer than 6 items changed" in text


def test_markdown_escapes_completions(tmp_path):
    b, t = _pair(tmp_path, tuned={**BASE, "0": 0.0},
                 tuned_kw={"completions": {"0": "</pre><script>alert(1)</script>"}})
    text = cmp.comparison_markdown(cmp.compare_paths(b, t))
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_terminal_table_renders(planted):
    comp = cmp.compare_paths(*planted)
    console = Console(record=True, width=200)
    console.print(cmp.comparison_table(comp))
    text = console.export_text()
    assert "toy" in text and "regressed" in text and "McNemar b=25 c=3" in text
    assert "Holm" in text


# ------------------------------------------------------------------------------------ CLI


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from evalkit.cli import main

    monkeypatch.setattr(sys, "argv", ["evalkit", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_cli_compare_on_run_folders(planted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    code, stdout, _ = _cli(monkeypatch, capsys, "compare", str(planted[0].parent),
                           str(planted[1].parent), "--out", str(out))
    assert code == 0
    assert "regressed" in stdout
    assert json.loads((out / "comparison.json").read_text())["rows"][0]["b"] == 25
    code, stdout, _ = _cli(monkeypatch, capsys, "compare", "--runs", str(planted[0]),
                           str(planted[1]), "--out", str(out), "--alpha", "1e-12")
    assert code == 0 and "no significant change" in stdout


def test_cli_compare_bad_input_is_one_line_exit_2(planted, tmp_path, monkeypatch, capsys):
    code, _, err = _cli(monkeypatch, capsys, "compare", "--runs", str(planted[0]),
                        str(tmp_path / "nope"))
    assert code == 2
    assert err.startswith("error: --runs: TUNED") and err.count("\n") == 1
    unfinished = make_run_folder(tmp_path / "unfinished", BASE, status="running")
    code, _, err = _cli(monkeypatch, capsys, "compare", str(planted[0]), str(unfinished))
    assert code == 2 and "not a finished run" in err and "Traceback" not in err


def test_a_tampered_sample_shows_its_status_on_the_flipped_item(tmp_path):
    # The sandbox scores a tampering program as failed and records why in samples.jsonl; a
    # reader of the comparison must see that the regression is a tampered sample.
    outcomes = {str(i): 1.0 for i in range(20)}
    base = make_run_folder(tmp_path / "base", outcomes, checkpoint="base")
    tuned = make_run_folder(tmp_path / "tuned", {**outcomes, "7": 0.0}, checkpoint="tuned")
    lines = (tuned / "samples.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        if record["doc_id"] == "7":
            record["execution"] = {"status": "tampered", "evidence": ["gc.get_objects"]}
    (tuned / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    comp = cmp.compare_paths(base, tuned)
    item = next(i for i in comp.tasks[0].flipped if i.doc_id == "7")
    assert item.tuned is not None and item.tuned.execution_status == "tampered"
    assert "execution: tampered" in cmp.comparison_markdown(comp)
    # ... and the task's count per side, where a glance at the comparison shows it.
    task = comp.tasks[0].task
    assert comp.notes == [f"{task}: 1 of 20 tuned samples tampered with the sandbox (scored as "
                          "failed; evidence in their run's samples.jsonl)"]
    assert f"{task}: 1 of 20 tuned samples tampered" in cmp.comparison_markdown(comp)
