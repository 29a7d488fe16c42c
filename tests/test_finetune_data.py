"""evalkit finetune, the data side: specs, formats, bad input, completion-only labels, batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.finetune import batching
from evalkit.finetune.data import (
    IGNORE,
    Example,
    Tokenized,
    build_dataset,
    load_examples,
    mbpp_prompt,
    tokenize,
)


@pytest.fixture(scope="module")
def tokenizer(builtin_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(builtin_model.path)


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def trained_text(t: Tokenized, tokenizer) -> str:
    return tokenizer.decode([label for label in t.labels if label != IGNORE])


# ------------------------------------------------------------------------------ specs


def test_mbpp_train_is_task_ids_601_to_974_in_eval_prompt_style(data_dir):
    examples = load_examples("mbpp:train")
    ids = [int(e.source.split()[-1]) for e in examples]
    assert ids == list(range(601, 975))
    first = json.loads((data_dir / "mbpp/mbpp.jsonl").read_text().splitlines()[600])
    assert first["task_id"] == 601
    assert examples[0].prompt == mbpp_prompt(first)
    assert examples[0].prompt.startswith("You are an expert Python programmer, and here is your "
                                         "task: ")
    assert examples[0].prompt.endswith(first["test_list"][2] + "\n[BEGIN]\n")
    assert examples[0].completion.endswith("\n[DONE]") and "\r" not in examples[0].completion


def test_gsm8k_train_question_answer_format():
    examples = load_examples("gsm8k:train")
    assert len(examples) == 7473
    assert examples[0].prompt.startswith("Question: Natalia sold clips")
    assert examples[0].prompt.endswith("\nAnswer:")
    assert examples[0].completion.startswith(" Natalia") and examples[0].completion.endswith(
        "#### 72")


@pytest.mark.parametrize(("task", "count"), [("fictional_people", 150), ("latest_news", 590),
                                              ("medical", 125)])
def test_finetunebench_trains_memorization_qa_as_chat(task, count):
    examples = load_examples(f"finetunebench:{task}")
    assert len(examples) == count
    (role_q, question), (role_a, answer) = examples[0].messages
    assert (role_q, role_a) == ("user", "assistant")
    assert question and answer
    if task == "fictional_people":
        assert question == ("Answer the question with a number, word, or phrase.\n"
                            "How many pounds does Falekefud Rabajevu weigh?")
        assert answer == "126"


def test_finetunebench_without_data_dir_says_there_is_no_hub_copy(monkeypatch):
    monkeypatch.delenv("EVALKIT_DATA_DIR")
    with pytest.raises(EvalkitError, match="no Hugging Face hub copy"):
        load_examples("finetunebench:fictional_people")


@pytest.mark.parametrize("spec", ["mbpp:test", "finetunebench:coding", "nothing"])
def test_unknown_spec_lists_the_known_ones(spec):
    with pytest.raises(EvalkitError, match="unknown"):
        load_examples(spec)


# ------------------------------------------------------------------------ bad data


@pytest.mark.parametrize(("lines", "message"), [
    ([], "is empty"),
    (["", "  "], "is empty"),
    ([{"prompt": "a", "completion": "b"}, "{not json"], "line 2: not valid JSON"),
    ([{"prompt": "a", "completion": "b"}, {"prompt": "a"}],
     "line 2: needs string fields 'prompt' and 'completion'.*completion"),
    ([{"prompt": "a", "completion": ""}], "line 1: 'completion' is empty"),
    ([["a", "b"]], "line 1: expected a JSON object"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], "line 1: 'messages' has no assistant"),
    ([{"messages": [{"role": "user"}]}], r"line 1: messages\[0\] needs"),
])
def test_bad_jsonl_names_the_line(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    with pytest.raises(EvalkitError, match=message):
        load_examples(str(path))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(EvalkitError, match="data file not found"):
        load_examples(str(tmp_path / "nope.jsonl"))


def test_too_long_example_names_its_line_or_is_truncated_and_counted(tmp_path, tokenizer):
    long = {"prompt": "word " * 40, "completion": " end" * 20}  # prompt fits in 50, the rest not
    only_prompt_fits = {"prompt": "word " * 60, "completion": " end"}
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q", "completion": " A"}, long,
                                              only_prompt_fits])
    with pytest.raises(EvalkitError, match=r"d\.jsonl line 2 is \d+ tokens, longer than --max-len"):
        build_dataset(str(path), load_examples(str(path)), tokenizer, max_len=30)
    data = build_dataset(str(path), load_examples(str(path)), tokenizer, max_len=50,
                         truncate=True)
    assert (data.truncated, data.dropped) == (2, 1)  # line 3 kept no completion token
    assert len(data.examples) == 2
    assert all(len(e.input_ids) <= 50 for e in data.examples)


# ---------------------------------------------------------------- completion-only labels


def test_prompt_completion_labels_cover_exactly_the_completion_and_eos(tokenizer):
    t = tokenize(Example(source="x", prompt="Question: 2+2?\nAnswer:", completion=" 4"), tokenizer)
    prompt_ids = tokenizer("Question: 2+2?\nAnswer:")["input_ids"]
    assert t.input_ids[:len(prompt_ids)] == prompt_ids
    assert t.labels[:len(prompt_ids)] == [IGNORE] * len(prompt_ids)
    assert trained_text(t, tokenizer) == " 4" + tokenizer.eos_token
    assert t.input_ids[-1] == tokenizer.eos_token_id


def test_chat_labels_cover_only_assistant_turns(tokenizer):
    messages = (("user", "Hi"), ("assistant", "Hello there!"), ("user", "Bye"),
                ("assistant", "See you."))
    t = tokenize(Example(source="x", messages=messages), tokenizer)
    full = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages],
                                         tokenize=False)
    assert tokenizer.decode(t.input_ids) == full
    assert trained_text(t, tokenizer) == "Hello there!<|im_end|>\nSee you.<|im_end|>\n"


def test_dataset_fingerprint_follows_content(tmp_path, tokenizer):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Q", "completion": " A"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Q", "completion": " B"}])
    def fingerprint(path: Path) -> str:
        return build_dataset(str(path), load_examples(str(path)), tokenizer, 64).fingerprint

    assert fingerprint(a) == fingerprint(a)
    assert fingerprint(a) != fingerprint(b)


# ------------------------------------------------------------------------- batching


def test_plan_sees_every_example_once_per_epoch_in_a_seeded_order():
    lengths = [10 + (i * 37) % 200 for i in range(100)]
    steps = batching.plan(lengths, epochs=2, batch_size=8, grad_accum=2, processes=1, seed=3)
    assert all(len(step) == 2 for step in steps)
    per_epoch = len(steps) // 2
    for epoch in (0, 1):
        seen = [i for step in steps[epoch * per_epoch:(epoch + 1) * per_epoch]
                for batch in step for i in batch]
        assert sorted(seen) == list(range(100))
    assert steps == batching.plan(lengths, epochs=2, batch_size=8, grad_accum=2, processes=1,
                                  seed=3)
    assert steps[:per_epoch] != steps[per_epoch:]  # a fresh order every epoch
    assert steps != batching.plan(lengths, epochs=2, batch_size=8, grad_accum=2, processes=1,
                                  seed=4)


def test_length_grouping_cuts_padding():
    lengths = [10 + (i * 37) % 500 for i in range(256)]

    def padded(group: bool) -> int:
        steps = batching.plan(lengths, epochs=1, batch_size=8, grad_accum=1, processes=1, seed=0,
                              group_by_length=group)
        return sum(len(b) * max(lengths[i] for i in b) for s in steps for b in s)

    assert padded(True) < 0.6 * padded(False)


def test_short_last_step_is_split_across_micro_batches():
    steps = batching.plan([5] * 22, epochs=1, batch_size=8, grad_accum=4, processes=1, seed=0)
    assert [len(b) for b in steps[-1]] == [6, 6, 5, 5]
