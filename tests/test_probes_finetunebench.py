"""FineTuneBench probes: answer normalization, scores, the tasks, and the --judge pass."""

from __future__ import annotations

import json

import pytest

from evalkit.run.judge import judge_verdict
from evalkit.scoring import ScoreInput, make_scorer
from evalkit.scoring.finetunebench import contains, exact, normalize
from evalkit.tasks import load_task

# text, normalized tokens
NORMALIZE = [
    ("126", ["126"]),
    ("126 pounds.", ["126", "pounds"]),
    ("126.0", ["126"]),
    ("7.50", ["7.5"]),
    ("1,950", ["1950"]),
    ("$50 million", ["50", "million"]),
    ("84.3%", ["84.3"]),
    ("twenty-one", ["21"]),
    ("Six", ["6"]),
    ("The Golden Gate Bridge", ["golden", "gate", "bridge"]),
    ("Ryan O\u2019Hearn", ["ryan", "o'hearn"]),
    ("23-13", ["23-13"]),
    ("  Yes, he is. ", ["yes", "he", "is"]),
    ("ＡＢＣ", ["abc"]),  # NFKC: full-width letters
    ("", []),
    # Issue 12: signs kept, unicode minus, number words with and without hyphens, leading-dot
    # decimals, N/A kept whole (the "a" is not an article there).
    ("-5", ["-5"]),
    ("\u22125 degrees", ["-5", "degrees"]),
    ("minus five", ["-5"]),
    ("-0.50", ["-0.5"]),
    ("covid-19", ["covid", "19"]),  # a hyphen between a word and a number is not a sign
    ("Fifty five", ["55"]),
    ("fifty-five", ["55"]),
    ("Ninety", ["90"]),
    (".5", ["0.5"]),
    ("0.50", ["0.5"]),
    ("N/A", ["n/a"]),
]


@pytest.mark.parametrize("text,tokens", NORMALIZE)
def test_normalization_table(text, tokens):
    assert normalize(text) == tokens


# response, gold, contains, exact
MATCH = [
    ("126", "126", True, True),
    ("Falekefud Rabajevu weighs 126 pounds.", "126", True, False),
    ("He weighs 1260 pounds.", "126", False, False),  # token boundaries
    ("126.0 lbs", "126", True, False),
    ("one hundred twenty-six", "126", False, False),  # only numbers below 100 as words
    ("Answer: six", "6", True, True),
    ("Gowel\nGowel is a city in the north.", "Gowel", True, True),  # first line only
    ("It is not Gowel.\nGowel", "Lubujakot", False, False),
    ("the golden gate bridge", "Golden Gate Bridge", True, True),
    ("No, Falekefud is not over 150 pounds.", "No", True, False),
    ("Yes. No doubt.", "No", False, False),  # the first yes/no decides
    ("Not really, no", "Yes", False, False),
    ("None", "None", True, True),
    ("I don't know.", "None", True, False),
    ("Unknown", "None", True, False),
    ("7", "None", False, False),
    ("$1,950", "1,950", True, True),
    ("", "126", False, False),
    # Issue 12, checked against the paper's definition (its judge prompt: is the guess the
    # answer?): a different sign is a different number; the same value written another way is
    # the same answer; an abstention answers a question whose gold answer is None.
    ("-5", "5", False, False),
    ("5", "-5", False, False),
    ("\u22125 degrees", "5 degrees", False, False),
    ("\u22125 degrees", "-5 degrees", True, True),
    ("It fell to minus 5 degrees.", "-5 degrees", True, False),
    ("Fifty five", "55", True, True),
    ("fifty-five", "55", True, True),
    ("Fifty five", "fifty-five", True, True),
    ("fifty", "55", False, False),
    (".5", "0.5", True, True),
    ("0.5%", ".5%", True, True),
    ("5", "0.5", False, False),
    ("N/A", "None", True, False),
    ("n/a", "None", True, False),
    ("Not available", "None", True, False),
    ("I cannot answer that.", "None", True, False),
    ("No information.", "None", True, False),
    ("N/A", "55", False, False),
]


@pytest.mark.parametrize("response,gold,is_in,is_exact", MATCH)
def test_answer_matching_table(response, gold, is_in, is_exact):
    assert contains(response, gold) is is_in
    assert exact(response, gold) is is_exact


def test_update_sets_score_the_new_and_the_old_fact():
    scorer = make_scorer("finetunebench", {"old_field": "answer_before"})
    doc = {"answer_before": "fit", "answer": "train"}
    new = scorer(ScoreInput(doc=doc, prompt="", completion="train", target="train"))
    old = scorer(ScoreInput(doc=doc, prompt="", completion="The method is fit.",
                            target="train"))
    assert new.values == {"answer,exact": 1.0, "answer,contains": 1.0,
                          "old_answer,contains": 0.0}
    assert old.values == {"answer,exact": 0.0, "answer,contains": 0.0,
                          "old_answer,contains": 1.0}
    old_metric = next(m for m in scorer.metrics(1) if m.name == "old_answer,contains")
    assert old_metric.higher_is_better is False


JUDGE_REPLIES = [("Correct", 1.0), (" Incorrect.", 0.0), ("correct\nIncorrect", 1.0),
                 ("Evaluation: Incorrect", 0.0), ("I think so", None)]


@pytest.mark.parametrize("reply,verdict", JUDGE_REPLIES)
def test_judge_verdicts(reply, verdict):
    assert judge_verdict(reply) == verdict


# ------------------------------------------------------------------------------ tasks

COUNTS = {"fictional_people_memorization": 150, "fictional_people_generalization": 150,
          "fictional_people_secondary": 150, "fictional_people_comparison": 150,
          "latest_news_memorization": 590, "latest_news_generalization": 590,
          "latest_news_date_changed": 590, "medical_memorization": 125,
          "medical_generalization": 125, "coding_generalization": 218}


@pytest.mark.parametrize("name,count", COUNTS.items())
def test_tasks_ask_the_datasets_prompts_as_one_user_turn(name, count, data_dir):
    task = load_task(f"finetunebench_{name}")
    docs = task.docs()
    assert len(docs) == count
    assert task.prompt(docs[0]) == [{"role": "user", "content": docs[0].data["prompt"]}]
    assert task.target(docs[0]) == docs[0].data["answer"]
    assert ("old_answer,contains" in {m.name for m in task.metrics(1)}) == (
        "answer_before" in docs[0].data)


def test_the_trained_turn_is_the_memorization_probe(data_dir):
    """What `evalkit finetune --data finetunebench:fictional_people` trains on is exactly
    what the memorization task asks (and answers)."""
    from evalkit.finetune.data import load_examples

    examples = load_examples("finetunebench:fictional_people")
    task = load_task("finetunebench_fictional_people_memorization")
    docs = task.docs()
    assert [dict(e.messages) for e in examples] == [
        {"user": d.data["prompt"], "assistant": d.data["answer"]} for d in docs]
    rephrased = load_task("finetunebench_fictional_people_generalization").docs()
    # the generalization items are the same facts (row for row), asked differently
    assert [d.data["answer"] for d in rephrased] == [d.data["answer"] for d in docs]
    assert sum(a.data["prompt"] != b.data["prompt"] for a, b in zip(docs, rephrased,
                                                                     strict=True)) == 150


# ----------------------------------------------------------------------------- --judge


def test_judge_pass_adds_a_judge_score_and_records_the_judge(tiny_llama, tmp_path, data_dir,
                                                            monkeypatch):
    """The judge's replies go through the generation cache: a second pass is served from it
    (the replies are swapped in the cache between the passes, and the swapped ones come back),
    and each reply's scores are the ones its words call for."""
    from cached_replies import cached_completions, replace_cached_text

    from evalkit.checkpoints import resolve
    from evalkit.compare.load import load_run
    from evalkit.run.judge import judge_runs
    from evalkit.run.runner import RunOptions, run_task

    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(cache_dir))
    model = resolve(str(tiny_llama))
    options = RunOptions(backend="hf", limit=3, out_dir=tmp_path / "runs", progress=False,
                         max_tokens=8, data_dir=data_dir)
    folders = [run_task(model, "finetunebench_fictional_people_memorization", options),
               run_task(model, "gsm8k_cot_zeroshot", RunOptions(
                   backend="hf", limit=1, out_dir=tmp_path / "runs", progress=False,
                   max_tokens=4, data_dir=data_dir))]
    before_judge = set(cached_completions(cache_dir))
    judged = judge_runs(folders, str(tiny_llama), options)
    assert judged == folders[:1]  # gsm8k has no judge prompt
    folder = folders[0]
    run = json.loads((folder / "run.json").read_text())
    assert run["judge"]["prompt"] == "finetunebench/prompts/latest_news.json#eval_prompt"
    assert run["judge"]["checkpoint"]["fingerprint"] == model.fingerprint
    assert run["judge"]["counts"] == {"generated": 3, "cached": 0}
    strings = [json.loads(x)["scores"]["answer,contains"]
               for x in (folder / "samples.jsonl").read_text().splitlines()]

    judge_keys = sorted(set(cached_completions(cache_dir)) - before_judge)
    assert len(judge_keys) == 3  # one cached reply per sample
    # reply -> (answer,judge, answer,judge_invalid), read off the words by hand
    expected = {"Correct": (1.0, 0.0), "Incorrect.": (0.0, 0.0), "I think so": (0.0, 1.0)}
    replace_cached_text(cache_dir, dict(zip(judge_keys, ["Correct", " Incorrect.", "I think so"],
                                            strict=True)))
    assert judge_runs(folders[:1], str(tiny_llama), options) == folders[:1]

    run = json.loads((folder / "run.json").read_text())
    assert run["judge"]["counts"] == {"generated": 0, "cached": 3}
    samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    assert sorted(s["extracted"]["judge"] for s in samples) == sorted(expected)
    for s in samples:
        assert (s["scores"]["answer,judge"], s["scores"]["answer,judge_invalid"]) == \
            expected[s["extracted"]["judge"]]
    assert [s["scores"]["answer,contains"] for s in samples] == strings  # string scores stay
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert metrics["answer,judge"]["n"] == 3
    assert metrics["answer,judge"]["value"] == pytest.approx(1 / 3)
    assert metrics["answer,judge_invalid"]["value"] == pytest.approx(1 / 3)
    assert set(load_run(folder).scores.metrics) >= {"answer,contains", "answer,judge"}
