"""Loglikelihood requests must mean what lm-evaluation-harness 0.4.13 means by them.

The references are lm-eval itself (its `_encode_pair`, rolling windows, HF model, MMLU/ARC task
objects and metrics) run on the same models and the same local files, and a forward pass done
by hand. vLLM-vs-transformers agreement is in test_loglikelihood_vllm.py.
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from evalkit.models.base import (
    LoglikelihoodRequest,
    encode_pair,
    request_windows,
    rolling_windows,
)
from evalkit.tasks import load_task

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is part of the dev extra")
LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"


@pytest.fixture(scope="module")
def tokenizer(builtin_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(builtin_model.path)


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    from evalkit.checkpoints import resolve

    return resolve(str(tiny_llama))


@pytest.fixture(scope="module")
def hf_tiny(tiny):
    from evalkit.models import load_backend

    backend = load_backend("hf", tiny, batch_size=4)
    yield backend
    backend.close()


# ------------------------------------------------------------------ encoding and windows


PAIRS = [("Question: 2+2=?\nAnswer:", " 4"), ("The capital of France is ", "Paris"),
         ("trailing spaces   ", " x"), ("abc", "def"), ("Answer:", " A"), ("x" * 50, "y z"),
         ("Jérôme dit :", " « bonjour »")]


@pytest.mark.parametrize("context,continuation", PAIRS)
def test_encode_pair_is_lm_evals(tokenizer, context, continuation):
    from lm_eval.api.model import TemplateLM

    ref = SimpleNamespace(backend="causal", tok_encode=lambda s, **kw: tokenizer.encode(s, **kw))
    assert encode_pair(tokenizer, context, continuation) == \
        TemplateLM._encode_pair(ref, context, continuation)


def test_trailing_context_spaces_move_to_the_continuation(tokenizer):
    context, continuation = encode_pair(tokenizer, "Answer: ", "A")
    assert tokenizer.decode(context) == "Answer:"
    assert tokenizer.decode(continuation) == " A"


def test_empty_context_conditions_on_the_prefix_token(tokenizer):
    context, continuation = encode_pair(tokenizer, "", "Hello world")
    assert context == [tokenizer.bos_token_id]
    assert tokenizer.decode(continuation) == "Hello world"


def test_rolling_windows_are_lm_evals():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    rnd = random.Random(0)
    for n in [0, 1, 2, 5, 16, 17, 31, 32, 33, 100, 257]:
        tokens = [rnd.randrange(1000) for _ in range(n)]
        for max_length in (1, 2, 8, 16, 32):
            ref = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=tokens, prefix_token=7, max_seq_len=max_length, context_len=1)]
            ours = rolling_windows(tokens, 7, max_length)
            assert ours == [(list(a), list(b)) for a, b in ref]
            # every token is scored exactly once, with at most max_length inputs
            assert [t for _, cont in ours for t in cont] == tokens
            assert all(len(a) + len(b) - 1 <= max_length for a, b in ours)


def test_long_contexts_are_cut_from_the_left_like_lm_eval(tokenizer):
    request = LoglikelihoodRequest(context="one two three " * 40, continuation=" four",
                                   max_length=16)
    ((context, continuation),) = request_windows(tokenizer, request)
    full_context, full_continuation = encode_pair(tokenizer, request.context, " four")
    # lm-eval: (context + continuation)[-(max_length + 1):][:-1] is the input
    assert context + continuation == (full_context + full_continuation)[-17:]
    assert continuation == full_continuation


# ------------------------------------------------------ the HF backend against lm-eval's


def test_hf_backend_equals_lm_evals_hf_model(tiny_llama, hf_tiny):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    ref = HFLM(pretrained=str(tiny_llama), device="cpu", batch_size=3, max_length=24,
               dtype="float32")
    pairs = [*PAIRS, ("word " * 60, " end")]  # the last one is cut to 24 tokens
    text = ("Robert Boulter is an English film , television and theatre actor . " * 6).strip()
    want = ref.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)])
    want_rolling = ref.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    requests = [LoglikelihoodRequest(c, x, max_length=24) for c, x in pairs]
    requests.append(LoglikelihoodRequest("", text, max_length=24, rolling=True))
    got = dict(hf_tiny.loglikelihood(requests))
    for i, (logprob, greedy) in enumerate(want):
        assert got[i].logprob == pytest.approx(logprob, abs=1e-4), pairs[i]
        assert got[i].is_greedy == greedy
    assert got[len(pairs)].logprob == pytest.approx(want_rolling[0], abs=1e-3)
    assert got[len(pairs)].n_tokens > 24  # several windows


# ----------------------------------------------------- MMLU: prompts, acc, and by hand


def _mmlu_records(data_dir: Path, split: str, subject: str) -> list[dict]:
    with open(data_dir / f"mmlu/{split}/{subject}_{split}.csv", newline="") as f:
        return [{"question": r["question"], "subject": subject,
                 "choices": [r[f"choice{k}"] for k in range(4)], "answer": int(r["answer"])}
                for r in csv.DictReader(f)]


def lm_eval_mmlu(data_dir: Path, subject: str):
    """lm-eval's own mmlu_<subject> task object over our local CSVs (cais/mmlu's schema)."""
    import datasets
    from lm_eval.api.task import ConfigurableTask

    folder = LM_EVAL_TASKS / "mmlu" / "default"
    config = yaml.safe_load((folder / "_default_template_yaml").read_text())
    config.update(yaml.safe_load((folder / f"mmlu_{subject}.yaml").read_text()))
    for key in ("include", "tag"):
        config.pop(key, None)
    dataset = datasets.DatasetDict({s: datasets.Dataset.from_list(_mmlu_records(data_dir, s,
                                                                                 subject))
                                    for s in ("dev", "test")})
    config.update(dataset_path=None, custom_dataset=lambda **_: dataset, num_fewshot=5)
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(seed=1234)
    return task


@pytest.mark.parametrize("subject", ["abstract_algebra", "high_school_european_history",
                                     "us_foreign_policy"])
def test_mmlu_requests_identical_to_lm_eval(data_dir, subject):
    ref = lm_eval_mmlu(data_dir, subject)
    ref.build_all_requests(limit=6, rank=0, world_size=1)
    want: dict[int, list] = {}
    for inst in sorted(ref.instances, key=lambda i: (i.doc_id, i.idx)):
        want.setdefault(inst.doc_id, []).append(inst.args)
    task = load_task("mmlu")
    docs = [d for d in task.docs() if d.data["subject"] == subject][:6]
    got = [task.loglikelihood_pairs(d, task.prompt(d)) for d in docs]
    assert [list(map(tuple, g)) for g in got] == [want[i] for i in range(6)]
    assert [task.gold(d.data) for d in docs] == [ref.doc_to_target(d) for d in
                                                  list(ref.test_docs())[:6]]


def test_mmlu_limit_is_per_subject_and_shots_are_the_subjects_dev_items(data_dir):
    task = load_task("mmlu")
    docs = task.docs(2)
    assert len(docs) == 2 * 57
    assert {d.id for d in docs[:2]} == {"abstract_algebra/0", "abstract_algebra/1"}
    dev = _mmlu_records(data_dir, "dev", "anatomy")
    prompt = task.prompt(next(d for d in docs if d.data["subject"] == "anatomy"))
    assert prompt.startswith("The following are multiple choice questions (with answers) "
                             "about anatomy.\n\n" + dev[0]["question"].strip())
    assert all(r["question"].strip() in prompt for r in dev)


@pytest.fixture(scope="module")
def mmlu_run(tiny, tmp_path_factory, data_dir):
    """The mmlu task, 2 items of each subject, on the tiny model through the runner."""
    from evalkit.run.runner import RunOptions, run_task

    options = RunOptions(backend="hf", limit=2, out_dir=tmp_path_factory.mktemp("runs"),
                         progress=False, use_cache=False, data_dir=data_dir)
    folder = run_task(tiny, "mmlu", options)
    samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    return folder, {s["doc_id"]: s for s in samples}


def test_mmlu_item_ranking_checked_by_hand(tiny, mmlu_run):
    """One forward pass done here, the four answer logprobs read off it, against the run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task = load_task("mmlu")
    doc = task.docs(1)[0]
    prompt = task.prompt(doc)
    tok = AutoTokenizer.from_pretrained(tiny.path)
    model = AutoModelForCausalLM.from_pretrained(tiny.path, dtype=torch.float32).eval()
    ids = tok.encode(prompt)
    letters = [tok.encode(prompt + f" {c}")[len(ids):] for c in "ABCD"]
    assert all(len(x) == 1 for x in letters)  # " A".." D" are one token each
    with torch.inference_mode():
        logprobs = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    by_hand = [float(logprobs[x[0]]) for x in letters]

    folder, samples = mmlu_run
    sample = samples[doc.id]
    got = [r["logprob"] for r in sample["loglikelihoods"]]
    assert got == pytest.approx(by_hand, abs=1e-4)
    assert [r["continuation"] for r in sample["loglikelihoods"]] == [" A", " B", " C", " D"]
    best = max(range(4), key=lambda i: by_hand[i])
    assert sample["completion"] == f" {'ABCD'[best]}"
    assert sample["scores"]["acc"] == float(best == task.gold(doc.data))
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert metrics["acc"]["n"] == 2 * 57
    per_subject = [metrics[f"acc,{s}"]["value"] for s in {d.split("/")[0] for d in samples}]
    assert metrics["acc,macro"]["value"] == pytest.approx(sum(per_subject) / 57)
    assert metrics["acc"]["value"] == pytest.approx(
        sum(s["scores"]["acc"] for s in samples.values()) / 114)


@pytest.mark.parametrize("subject", ["college_biology", "moral_scenarios"])
def test_mmlu_acc_equals_lm_evals_on_the_same_model(tiny_llama, mmlu_run, data_dir, subject):
    """lm-eval end to end (its HF model, its task, its process_results) on the same items."""
    from lm_eval.models.huggingface import HFLM

    ref_task = lm_eval_mmlu(data_dir, subject)
    ref_task.build_all_requests(limit=2, rank=0, world_size=1)
    lm = HFLM(pretrained=str(tiny_llama), device="cpu", batch_size=4, dtype="float32")
    instances = sorted(ref_task.instances, key=lambda i: (i.doc_id, i.idx))
    results = lm.loglikelihood(instances)
    docs = list(ref_task.test_docs())[:2]
    _, samples = mmlu_run
    for d in range(2):
        want = ref_task.process_results(docs[d], results[4 * d:4 * d + 4])["acc"]
        sample = samples[f"{subject}/{d}"]
        assert sample["scores"]["acc"] == want
        assert [r["logprob"] for r in sample["loglikelihoods"]] == \
            pytest.approx([r[0] for r in results[4 * d:4 * d + 4]], abs=1e-4)
        assert [r["is_greedy"] for r in sample["loglikelihoods"]] == \
            [r[1] for r in results[4 * d:4 * d + 4]]


# ------------------------------------------------------------------------------ ARC


@pytest.mark.parametrize("name,config", [("arc_easy", "ARC-Easy"),
                                         ("arc_challenge", "ARC-Challenge")])
def test_arc_requests_identical_to_lm_eval(data_dir, name, config):
    from lm_eval.api.task import ConfigurableTask

    spec = yaml.safe_load((LM_EVAL_TASKS / "arc" / "arc_easy.yaml").read_text())
    spec.pop("tag", None)
    files = {s: str(data_dir / f"arc/{config}-{s}.jsonl") for s in ("train", "validation",
                                                                      "test")}
    spec.update(task=name, dataset_path="json", dataset_name=None,
                dataset_kwargs={"data_files": files})
    ref = ConfigurableTask(config=spec)
    ref.build_all_requests(limit=40, rank=0, world_size=1)
    want: dict[int, list] = {}
    for inst in sorted(ref.instances, key=lambda i: (i.doc_id, i.idx)):
        want.setdefault(inst.doc_id, []).append(inst.args)
    task = load_task(name)
    docs = task.docs(40)
    assert [[tuple(p) for p in task.loglikelihood_pairs(d, task.prompt(d))] for d in docs] == \
        [want[i] for i in range(40)]
    ref_docs = list(ref.test_docs())[:40]
    assert [task.gold(d.data) for d in docs] == [ref.doc_to_target(d) for d in ref_docs]


def test_multiple_choice_metrics_are_lm_evals(data_dir):
    """acc and acc_norm from the same loglikelihoods: ours against lm-eval's process_results."""
    from lm_eval.api.task import ConfigurableTask

    from evalkit.models.base import Loglikelihood
    from evalkit.scoring.loglikelihood import LoglikelihoodInput

    spec = yaml.safe_load((LM_EVAL_TASKS / "arc" / "arc_easy.yaml").read_text())
    spec.pop("tag", None)
    spec.update(dataset_path="json", dataset_name=None, dataset_kwargs={
        "data_files": {"test": str(data_dir / "arc/ARC-Easy-test.jsonl")}},
        training_split=None, validation_split=None)
    ref = ConfigurableTask(config=spec)
    task = load_task("arc_easy")
    rnd = random.Random(1)
    for doc, ref_doc in zip(task.docs(30), list(ref.test_docs())[:30], strict=True):
        choices = task.choices(doc.data)
        lls = [rnd.choice([-3.0, -7.5, -12.25, -7.5]) * len(c) ** rnd.random() for c in choices]
        want = ref.process_results(ref_doc, [(x, False) for x in lls])
        got = task.scorer.score_loglikelihood(LoglikelihoodInput(
            doc=doc.data, continuations=[" " + c for c in choices],
            results=[Loglikelihood(x, False, 1) for x in lls], choices=choices,
            gold=task.gold(doc.data)))
        assert got.values == {"acc": want["acc"], "acc_norm": want["acc_norm"]}


# -------------------------------------------------------------------------- WikiText


def test_wikitext_articles_and_detokenizer(data_dir):
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    task = load_task("wikitext")
    docs = task.docs()
    assert len(docs) == 62  # lm-eval's wikitext test has 62 documents
    assert len(task.split_records("validation")) == 60
    assert docs[0].data["page"].startswith(" = Robert Boulter = \n")
    raw = (data_dir / "wikitext2/wiki.test.raw").read_text(encoding="utf-8")
    # the articles are the file's lines from the first title on, nothing left out or added
    assert "\n".join(d.data["page"] for d in docs) == raw[raw.index(" = Robert Boulter = "):]
    for d in docs:
        assert task.target(d) == wikitext_detokenizer({"page": d.data["page"]})


def test_corpus_perplexity_is_lm_evals():
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
    from lm_eval.tasks.wikitext.preprocess_wikitext import process_results

    from evalkit.models.base import Loglikelihood
    from evalkit.scoring.loglikelihood import LoglikelihoodInput, Perplexity, PerplexityConfig

    pages = [" = A = \n The cat sat . \n", " = B = \n Über 3 @,@ 000 people \u2014 \n \n",
             " x"]
    lls = [-41.5, -130.25, -7.0]
    scorer = Perplexity(PerplexityConfig(count_field="page"))
    scores = [scorer.score_loglikelihood(LoglikelihoodInput(
        doc={"page": p}, continuations=["detokenized"], results=[Loglikelihood(x, False, 5)]))
        .values for p, x in zip(pages, lls, strict=True)]
    got = scorer.summary_metrics([{"scores": s} for s in scores])
    ref = [process_results({"page": p}, [x]) for p, x in zip(pages, lls, strict=True)]
    assert got["word_perplexity"]["value"] == pytest.approx(
        weighted_perplexity([r["word_perplexity"] for r in ref]))
    assert got["byte_perplexity"]["value"] == pytest.approx(
        weighted_perplexity([r["byte_perplexity"] for r in ref]))
    assert got["bits_per_byte"]["value"] == pytest.approx(
        bits_per_byte([r["bits_per_byte"] for r in ref]))
    assert scores[0]["bits_per_byte,doc_mean"] == pytest.approx(
        41.5 / len(pages[0].encode()) / math.log(2))


def test_wikitext_run_resumes_and_reuses_the_cache(tiny, tmp_path, data_dir, monkeypatch):
    from evalkit.run.runner import RunOptions, run_task

    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    options = RunOptions(backend="hf", limit=2, out_dir=tmp_path / "runs", progress=False,
                         data_dir=data_dir)
    folder = run_task(tiny, "wikitext", options)
    run = json.loads((folder / "run.json").read_text())
    assert run["generation"] == {"output_type": "loglikelihood_rolling", "n": 1,
                                 "max_length": 2046}  # tiny llama's 2048-token context - 2
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert {"word_perplexity", "byte_perplexity", "bits_per_byte",
            "bits_per_byte,doc_mean"} <= set(metrics)
    assert metrics["bits_per_byte"]["aggregation"] == "corpus"
    first = (folder / "samples.jsonl").read_text().splitlines()
    # a killed run: drop the last sample, rerun: only that doc is scored again, from the cache
    (folder / "samples.jsonl").write_text(first[0] + "\n")
    again = run_task(tiny, "wikitext", options)
    assert again == folder
    run = json.loads((folder / "run.json").read_text())
    assert run["counts"] == {**run["counts"], "resumed": 1, "cached": 1, "generated": 0}
    redone = (folder / "samples.jsonl").read_text().splitlines()
    assert json.loads(redone[1])["loglikelihoods"] == json.loads(first[1])["loglikelihoods"]


# --------------------------------------------------------------------- bad task files


@pytest.mark.parametrize("extra,error", [
    ("output_type: multiple_choice\n", "field 'choices': required"),
    ("output_type: multiple_choice\nchoices: '{{question}}'\n", "must render to a list"),
    ("output_type: multiple_choice\nchoices: [A, B]\n", "neither a choice index nor"),
    ("output_type: perplexity\n", "field 'output_type'"),
])
def test_bad_loglikelihood_task_files_are_one_line_errors(tmp_path, extra, error):
    from evalkit.errors import EvalkitError

    (tmp_path / "toy.jsonl").write_text('{"question": "q?", "answer": "7"}\n')
    path = tmp_path / "toy.yaml"
    path.write_text("name: toy\nversion: '1'\ndataset: {splits: {test: {file: toy.jsonl}}}\n"
                    "split: test\nprompt: '{{question}}'\ntarget: '{{answer}}'\n"
                    "scorer: {name: multiple_choice}\n" + extra)
    with pytest.raises(EvalkitError, match=error):
        task = load_task(str(path), data_dir=tmp_path)
        doc = task.docs()[0]
        task.gold(doc.data)
