"""Critique probes: verdict extraction, judge metrics (scikit-learn, ProcessBench's F1), the
critique-and-correct scores (code run in the real sandbox), the data, and a run."""

from __future__ import annotations

import json

import pytest

from evalkit.scoring import ScoreInput, make_scorer
from evalkit.scoring.critique import (
    INVALID,
    answers_match,
    corrected_program,
    extract_final_answer,
    extract_first_error_step,
    extract_verdict,
    judge_summary,
)
from evalkit.tasks import load_task

# completion, verdict, first wrong step (for a ProcessBench item)
VERDICTS = [
    (" incorrect, first incorrect step: 2", "incorrect", 2),
    (" correct", "correct", -1),
    (" Correct.", "correct", -1),
    ("Verdict: incorrect\nFirst incorrect step: 0", "incorrect", 0),
    ("Step 1 looks fine.\n\n**Verdict:** Incorrect\n**First incorrect step:** 3", "incorrect", 3),
    ("Verdict: correct\nFirst incorrect step: -1", "correct", -1),
    ("The solution is correct.", "correct", -1),
    ("The solution is not correct: the error is in step 4.", "incorrect", 4),
    ("I first thought the answer is correct, but the reasoning is flawed.", "incorrect", None),
    ("Conclusion: the solution is incorrect. The first wrong step is step 1.", "incorrect", 1),
    ("\\boxed{incorrect}", "incorrect", None),
    ("\\boxed{\\text{Correct}}", "correct", -1),
    ("Yes", "correct", -1),
    (" no, step 2 is wrong", "incorrect", 2),
    ("There are no errors in this solution.", "correct", -1),
    ("The calculation in step 2 contains an error.", "incorrect", 2),
    ("Verdict: <correct or incorrect>", INVALID, None),  # an echoed template is no verdict
    ("Let me check each step. Step 0: 16 - 3 = 13.", INVALID, None),
    ("", INVALID, None),
    ("Verdict: incorrect\nFirst incorrect step: -1", "incorrect", None),  # contradicts itself
    ("The answer is correct. ... Final verdict: wrong", "incorrect", None),  # the last label
    ("The implementation is not valid for empty lists.", "incorrect", None),
]


@pytest.mark.parametrize("completion,verdict,step", VERDICTS)
def test_verdict_parser_table(completion, verdict, step):
    assert extract_verdict(completion) == verdict
    assert extract_first_error_step(completion, verdict) == step


# answer text, gold, multiple choice, match
ANSWERS = [
    ("18", "18", False, True),
    ("$18.00", "18", False, True),
    ("1,234", "1234", False, True),
    ("\\frac{7}{2}", "\\frac{7}{2}", False, True),
    ("3.5", "\\frac{7}{2}", False, True),
    ("\\dfrac{1}{3}", "1/3", False, True),
    ("10\\%", "10", False, True),
    ("5 \\text{ cm}", "5", False, True),
    ("x^2 + 1", "x^2+1", False, True),
    ("17", "18", False, False),
    ("(B)", "B", True, True),
    ("B) thymine", "B", True, True),
    ("The answer is C", "B", True, False),
    (INVALID, "18", False, False),
]


@pytest.mark.parametrize("answer,gold,mc,match", ANSWERS)
def test_corrected_answer_matching_table(answer, gold, mc, match):
    assert answers_match(answer, gold, mc) is match


def test_final_answer_extraction():
    assert extract_final_answer("so \\boxed{\\frac{7}{2}} is it") == "\\frac{7}{2}"
    assert extract_final_answer("\\boxed{1} then \\boxed{2}") == "2"
    assert extract_final_answer("Review: step 2 is wrong.\nFinal answer: 42.") == "42"
    assert extract_final_answer("I am not sure.") == INVALID


def _judged(label: bool, completion: str, error_step: int | None = None) -> dict:
    scorer = make_scorer("critique_judge", {"processbench": True})
    doc = {"is_correct": label, "error_step": error_step}
    s = scorer(ScoreInput(doc=doc, prompt="", completion=completion, target=str(label)))
    return {"scores": s.values, "extracted": s.extracted, "target": s.target}


def test_judge_metrics_on_hand_made_items():
    samples = [_judged(True, "Verdict: correct"), _judged(True, "Verdict: incorrect"),
               _judged(True, "hmm"),  # invalid: counted, and wrong
               _judged(False, "Verdict: incorrect"), _judged(False, "Verdict: incorrect"),
               _judged(False, "Verdict: correct")]
    assert [s["scores"]["accuracy"] for s in samples] == [1, 0, 0, 1, 1, 0]
    assert [s["scores"]["invalid"] for s in samples] == [0, 0, 1, 0, 0, 0]
    summary = judge_summary(samples)
    # by hand: recall(correct) = 1/3, recall(incorrect) = 2/3
    assert summary["balanced_accuracy"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    # correct: tp 1, fp 1, fn 2 -> 2/5; incorrect: tp 2, fp 1, fn 1 -> 4/6
    assert summary["f1,correct"] == pytest.approx(2 / 5)
    assert summary["f1,incorrect"] == pytest.approx(4 / 6)
    assert "processbench_f1" not in summary  # no item has a step label


def test_processbench_f1_is_the_harmonic_mean_of_its_two_accuracies():
    samples = [
        _judged(False, "Verdict: incorrect, first incorrect step: 2", error_step=2),  # right
        _judged(False, "Verdict: incorrect, first incorrect step: 1", error_step=2),  # wrong step
        _judged(False, "Verdict: correct", error_step=0),  # missed the error
        _judged(False, "Verdict: incorrect", error_step=1),  # no step given: wrong
        _judged(True, "Verdict: correct", error_step=-1),
        _judged(True, "Verdict: correct", error_step=-1),
        _judged(True, "Verdict: incorrect, first incorrect step: 0", error_step=-1),
    ]
    assert [s["scores"].get("processbench,acc_error") for s in samples[:4]] == [1, 0, 0, 0]
    assert [s["scores"].get("processbench,acc_correct") for s in samples[4:]] == [1, 1, 0]
    err, ok = 1 / 4, 2 / 3
    assert judge_summary(samples)["processbench_f1"] == pytest.approx(2 * err * ok / (err + ok))
    assert samples[1]["extracted"]["first_error_step"] == "1"
    assert samples[3]["extracted"]["first_error_step"] == INVALID


def test_critique_and_correct_scores_against_the_original():
    scorer = make_scorer("critique_correct", {})
    doc_wrong, doc_right = {"is_correct": False}, {"is_correct": True}

    def score(doc, completion):
        return scorer(ScoreInput(doc=doc, prompt="", completion=completion, target="18")).values

    assert score(doc_wrong, "Step 2 is wrong ... \\boxed{18}") == {
        "original": 0.0, "invalid": 0.0, "corrected": 1.0, "corrected,on_incorrect": 1.0,
        "net_gain": 1.0}
    assert score(doc_right, "I changed it: \\boxed{17}")["net_gain"] == -1.0
    assert score(doc_right, "no answer")["invalid"] == 1.0


# ------------------------------------------------------------- code, in the sandbox


@pytest.fixture(scope="module")
def sandbox():
    from evalkit.sandbox import get_sandbox

    with get_sandbox("process", workers=2) as sb:
        yield sb


def test_code_corrections_run_against_the_problems_tests(sandbox, data_dir):
    task = load_task("critique_code_correct")
    correct, buggy = task.docs(1)  # Python/0 correct, Python/0 buggy
    assert correct.id == "Python/0/correct" and buggy.id == "Python/0/buggy"
    scorer = task.scorer
    assert scorer.needs_sandbox

    def run(doc, completion):
        return scorer(ScoreInput(doc=doc.data, prompt="", completion=completion,
                                 target=task.target(doc), sandbox=sandbox))

    fixed = run(buggy, correct.data["body"])  # the model rewrote the body correctly
    assert fixed.values["corrected,on_incorrect"] == 1.0 and fixed.values["net_gain"] == 1.0
    assert fixed.execution["status"] == "passed"
    kept_bug = run(buggy, buggy.data["body"])
    assert kept_bug.values["corrected"] == 0.0 and kept_bug.execution["status"] == "failed"
    broke = run(correct, "    return True\n")
    assert broke.values["net_gain"] == -1.0

    chat = load_task("critique_code_correct_chat").scorer
    reply = ("The bug: the distance must be absolute.\n```python\n" + correct.data["prompt"]
             + correct.data["body"] + "```\n")
    program = corrected_program(buggy.data, reply, fenced=True)
    assert "from typing import List" in program and program.count("check(") == 2  # def + call
    ok = chat(ScoreInput(doc=buggy.data, prompt="", completion=reply, target="", sandbox=sandbox))
    assert ok.values["corrected"] == 1.0
    none = chat(ScoreInput(doc=buggy.data, prompt="", completion="It is fine.", target="",
                           sandbox=sandbox))
    assert none.values["invalid"] == 1.0 and none.values["corrected"] == 0.0


# ------------------------------------------------------------------------------- data


def test_critique_data(data_dir):
    gsm8k = load_task("critique_gsm8k").docs()
    assert len(gsm8k) == 400 + 1319
    pb = [d.data for d in gsm8k if d.data["source"] == "processbench"]
    assert sum(r["error_step"] == -1 for r in pb) == 193  # ProcessBench gsm8k: 193 correct
    assert all(r["is_correct"] == (r["error_step"] == -1) for r in pb)
    assert all(r["gold"] for r in pb)  # every ProcessBench problem found in GSM8K test
    oai = [d.data for d in gsm8k if d.data["source"] != "processbench"]
    assert sum(r["is_correct"] for r in oai) == 742  # 175b_verification
    assert "<<" not in oai[0]["solution"]
    realcritic = load_task("critique_realcritic").docs()
    assert len(realcritic) == 1903 and sum(d.data["is_correct"] for d in realcritic) == 949
    code = load_task("critique_code").docs()
    assert len(code) == 328 and sum(d.data["is_correct"] for d in code) == 164
    # --limit is per source: both kinds of solution are always asked
    assert {d.data["source"] for d in load_task("critique_gsm8k").docs(3)} == {
        "processbench", "openai-175b-verification"}
    assert len(load_task("critique_realcritic").docs(2)) == 14


def test_prompts_number_steps_from_zero_like_processbench(data_dir):
    task = load_task("critique_gsm8k")
    doc = next(d for d in task.docs() if d.data["source"] == "processbench")
    prompt = task.prompt(doc)
    for i, step in enumerate(doc.data["steps"]):
        assert f"Step {i}: {step}\n" in prompt
    assert prompt.endswith("\nVerdict:")
    chat = load_task("critique_gsm8k_chat").prompt(doc)
    assert chat[-1]["role"] == "user" and "First incorrect step:" in chat[-1]["content"]


def test_judge_run_on_a_tiny_model(tiny_llama, tmp_path, data_dir, monkeypatch):
    """A run of the judge task, then the same run served hand-written verdicts from the
    generation cache: every metric is the value worked out by hand for those verdicts, the
    [invalid] bucket is counted and scored wrong, and ProcessBench's F1 is left out because
    the two ProcessBench items here both have an error (it needs both kinds)."""
    from cached_replies import cached_completions, replace_cached_text

    from evalkit.checkpoints import resolve
    from evalkit.run.runner import RunOptions, run_task

    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(cache_dir))
    model = resolve(str(tiny_llama))
    first = run_task(model, "critique_gsm8k", RunOptions(
        backend="hf", limit=2, out_dir=tmp_path / "first", progress=False, data_dir=data_dir))
    tokens = {json.loads(x)["n_prompt_tokens"]: json.loads(x)["doc_id"]
              for x in (first / "samples.jsonl").read_text().splitlines()}
    assert len(tokens) == 4  # prompt lengths tell the cached requests apart
    # doc -> the reply the cache serves for it
    replies = {"processbench/gsm8k-0": "Verdict: incorrect\nFirst incorrect step: 1",  # gold 1
               "processbench/gsm8k-1": " incorrect, first incorrect step: 3",  # gold step is 1
               "gsm8k-solutions/0": " correct",
               "gsm8k-solutions/1": "Verdict: <correct or incorrect>"}  # no verdict
    replace_cached_text(cache_dir, {key: replies[tokens[c["n_prompt_tokens"]]]
                                    for key, c in cached_completions(cache_dir).items()})

    folder = run_task(model, "critique_gsm8k", RunOptions(
        backend="hf", limit=2, out_dir=tmp_path / "again", progress=False, data_dir=data_dir))
    run = json.loads((folder / "run.json").read_text())
    assert run["counts"]["cached"] == 4 and run["counts"]["generated"] == 0
    samples = {json.loads(x)["doc_id"]: json.loads(x)
               for x in (folder / "samples.jsonl").read_text().splitlines()}
    assert {d: s["completion"] for d, s in samples.items()} == replies
    assert samples["gsm8k-solutions/1"]["extracted"]["verdict"] == INVALID
    assert samples["gsm8k-solutions/1"]["scores"]["accuracy"] == 0.0
    metrics = {k: v["value"] for k, v in
               json.loads((folder / "metrics.json").read_text())["metrics"].items()}
    # truth: incorrect, incorrect, correct, correct; said: incorrect, incorrect, correct, invalid
    expected = {"accuracy": 3 / 4, "invalid": 1 / 4, "accuracy,on_correct": 1 / 2,
                "accuracy,on_incorrect": 1.0,
                "processbench,acc_error": 1 / 2,  # one of the two first wrong steps named
                "balanced_accuracy": (1 / 2 + 2 / 2) / 2,  # recall on correct, on incorrect
                "f1,correct": 2 / 3,  # precision 1/1, recall 1/2
                "f1,incorrect": 1.0,  # precision 2/2, recall 2/2
                "accuracy,processbench": 1.0, "accuracy,openai-175b-verification": 1 / 2,
                "accuracy,macro": 3 / 4}
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert "processbench_f1" not in metrics


def test_critique_and_correct_code_run_executes_in_the_sandbox(tiny_llama, tmp_path, data_dir):
    from evalkit.checkpoints import resolve
    from evalkit.run.runner import RunOptions, run_task

    options = RunOptions(backend="hf", limit=1, out_dir=tmp_path, progress=False, max_tokens=16,
                         use_cache=False, data_dir=data_dir, workers=2)
    folder = run_task(resolve(str(tiny_llama)), "critique_code_correct", options)
    samples = {json.loads(x)["doc_id"]: json.loads(x)
               for x in (folder / "samples.jsonl").read_text().splitlines()}
    assert set(samples) == {"Python/0/correct", "Python/0/buggy"}
    for s in samples.values():
        assert s["execution"]["status"] in ("passed", "failed", "timeout")
        assert s["execution"]["program"].endswith("check(has_close_elements)")
        assert s["scores"]["corrected"] == float(s["execution"]["status"] == "passed")
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert metrics["original"]["value"] == 0.5  # one correct, one buggy solution
