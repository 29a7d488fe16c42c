"""Training data: a `--data` spec → examples → token ids with completion-only labels.

Specs (see docs/finetune.md for the exact formats):

- ``mbpp:train``      MBPP task ids 601–974, prompt/completion in the MBPP eval style.
- ``gsm8k:train``     GSM8K train, ``Question: ...\\nAnswer:`` → `` <rationale> #### N``.
- ``finetunebench:fictional_people|latest_news|medical``  the memorization QA pairs, as one
  user/assistant chat turn rendered with the model's chat template.
- ``path/to/file.jsonl``  one JSON object a line: ``prompt`` + ``completion`` strings (raw text)
  or ``messages`` (a list of ``{"role", "content"}``; rendered with the chat template).

Loss is on completion tokens only: prompt tokens, chat headers and user/system turns get label
-100. Prompt/completion text is tokenized as two pieces and concatenated, which is exactly what
the model sees at inference (the prompt is tokenized alone, then the completion is generated).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.paths import data_dir as default_data_dir
from evalkit.tasks.data import load_records

IGNORE = -100  # label of a token the loss skips

MBPP_TRAIN_IDS = range(601, 975)
FINETUNEBENCH_TASKS = ("fictional_people", "latest_news", "medical")
BUILTIN_SPECS = ("mbpp:train", "gsm8k:train", *(f"finetunebench:{t}" for t in FINETUNEBENCH_TASKS))


@dataclass(frozen=True)
class Example:
    """One training example: raw ``prompt``/``completion`` text, or chat ``messages``."""

    source: str  # where it came from, for error messages ("data.jsonl line 12", "mbpp task 601")
    prompt: str | None = None
    completion: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE outside completion tokens
    source: str

    @property
    def n_target(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass(frozen=True)
class Dataset:
    """Tokenized examples plus what the manifest says about them."""

    spec: str
    fingerprint: str  # sha256 of the examples' text (tokenizer-independent)
    format: str  # "prompt_completion" | "chat"
    examples: list[Tokenized]
    truncated: int  # examples cut at --max-len (only with --truncate)
    dropped: int  # examples with no completion token left after truncation

    @property
    def n_tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)

    @property
    def n_target_tokens(self) -> int:
        return sum(e.n_target for e in self.examples)


# ------------------------------------------------------------------------------ loading


def load_examples(spec: str, data_dir: str | Path | None = None) -> list[Example]:
    """The examples a ``--data`` spec names, in file order (or raise EvalkitError)."""
    if spec == "mbpp:train":
        return _mbpp_train(data_dir)
    if spec == "gsm8k:train":
        return _gsm8k_train(data_dir)
    if spec.startswith("finetunebench:"):
        return _finetunebench(spec.removeprefix("finetunebench:"), data_dir)
    path = Path(spec).expanduser()
    if path.suffix == ".jsonl" or path.exists():
        return read_jsonl(path)
    raise EvalkitError(
        f"unknown data spec '{spec}' (known: {', '.join(BUILTIN_SPECS)}, or a local .jsonl file)"
    )


def read_jsonl(path: Path) -> list[Example]:
    """A local JSONL file; every bad line is reported with its number."""
    if not path.is_file():
        raise EvalkitError(f"data file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"cannot read data file {path}: {exc}") from None
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalkitError(f"{where}: not valid JSON ({exc.msg})") from None
        examples.append(_example_from_record(record, where))
    if not examples:
        raise EvalkitError(f"data file {path} is empty")
    return examples


def _example_from_record(record: Any, where: str) -> Example:
    if not isinstance(record, dict):
        raise EvalkitError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        return Example(source=where, messages=_messages(record["messages"], where))
    prompt, completion = record.get("prompt"), record.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        missing = [k for k in ("prompt", "completion") if not isinstance(record.get(k), str)]
        raise EvalkitError(
            f"{where}: needs string fields 'prompt' and 'completion' (missing or not a string: "
            f"{', '.join(missing)}), or a 'messages' list"
        )
    if not completion:
        raise EvalkitError(f"{where}: 'completion' is empty, nothing to learn")
    return Example(source=where, prompt=prompt, completion=completion)


def _messages(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise EvalkitError(f"{where}: 'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):
            raise EvalkitError(f"{where}: messages[{i}] needs string 'role' and 'content'")
        out.append((m["role"], m["content"]))
    if not any(role == "assistant" for role, _ in out):
        raise EvalkitError(f"{where}: 'messages' has no assistant turn, nothing to learn")
    return tuple(out)


def mbpp_prompt(record: dict) -> str:
    """The MBPP eval prompt (reference/conventions.md), without the few-shot examples."""
    tests = "\n".join(record["test_list"][:3])
    return (f"You are an expert Python programmer, and here is your task: {record['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


def _mbpp_train(data_dir: str | Path | None) -> list[Example]:
    records = load_records("mbpp/mbpp.jsonl", data_dir=data_dir,
                           hub=("google-research-datasets/mbpp", "full", "train"))
    return [
        Example(source=f"mbpp task {r['task_id']}", prompt=mbpp_prompt(r),
                # The upstream solutions use \r\n; the eval shots and generations use \n.
                completion=r["code"].replace("\r\n", "\n") + "\n[DONE]")
        for r in records if int(r["task_id"]) in MBPP_TRAIN_IDS
    ]


def _gsm8k_train(data_dir: str | Path | None) -> list[Example]:
    records = load_records("gsm8k/train.jsonl", hub=("openai/gsm8k", "main", "train"),
                           data_dir=data_dir)
    return [
        Example(source=f"gsm8k train {i}", prompt=f"Question: {r['question']}\nAnswer:",
                completion=f" {r['answer']}")
        for i, r in enumerate(records)
    ]


def _finetunebench(task: str, data_dir: str | Path | None) -> list[Example]:
    if task not in FINETUNEBENCH_TASKS:
        raise EvalkitError(f"unknown FineTuneBench task '{task}' (known: "
                           f"{', '.join(FINETUNEBENCH_TASKS)})")
    if default_data_dir(data_dir) is None:
        raise EvalkitError(
            "FineTuneBench has no Hugging Face hub copy: set --data-dir / EVALKIT_DATA_DIR to a "
            "folder holding finetunebench/datasets/ (github.com/kevinwu23/StanfordFineTuneBench)"
        )
    file = f"finetunebench/datasets/{task}/{task}_memorization.csv"
    records = load_records(file, data_dir=data_dir)
    # The paper fine-tunes on each memorization question/answer pair; the `prompt` column is the
    # exact question text it asks back, so the probes and the training turn match.
    return [
        Example(source=f"{file} row {i + 2}",
                messages=(("user", r["prompt"]), ("assistant", r["answer"])))
        for i, r in enumerate(records)
    ]


def _format(examples: list[Example]) -> str:
    kinds = {"chat" if e.messages is not None else "prompt_completion" for e in examples}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def fingerprint(examples: list[Example]) -> str:
    payload = json.dumps([asdict(e) for e in examples], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


# --------------------------------------------------------------------------- tokenizing


def render(example: Example, tokenizer: Any) -> list[tuple[str, bool]]:
    """The example as text pieces, each marked True where the loss applies."""
    if example.messages is None:
        return [(example.prompt or "", False), (example.completion or "", True)]
    return _render_chat(example, tokenizer)


def _render_chat(example: Example, tokenizer: Any) -> list[tuple[str, bool]]:
    """Split a rendered conversation into non-assistant and assistant pieces.

    Renders growing prefixes of the conversation: what an assistant turn adds after the
    generation prompt is trained on; everything else (system, user, headers) is not.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise EvalkitError(f"{example.source}: chat data needs a model with a chat template")
    messages = [{"role": r, "content": c} for r, c in example.messages or ()]

    def text(upto: int, generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(messages[:upto], tokenize=False,
                                             add_generation_prompt=generation_prompt)

    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            header = text(i, generation_prompt=True)
            pieces.append((_extension(done, header, example), False))
            done = header
        full = text(i + 1)
        pieces.append((_extension(done, full, example), message["role"] == "assistant"))
        done = full
    return [(t, trained) for t, trained in pieces if t]


def _extension(prefix: str, full: str, example: Example) -> str:
    if not full.startswith(prefix):
        raise EvalkitError(
            f"{example.source}: the chat template does not render conversations prefix by prefix, "
            "so assistant turns cannot be located for completion-only loss"
        )
    return full[len(prefix):]


def tokenize(example: Example, tokenizer: Any) -> Tokenized:
    """Token ids and labels; prompt/completion text ends with the EOS token so the model learns
    to stop (chat templates already close each assistant turn)."""
    ids: list[int] = []
    labels: list[int] = []
    pieces = render(example, tokenizer)
    for i, (text, trained) in enumerate(pieces):
        # Raw text gets the tokenizer's special prefix (BOS) once; chat templates write theirs.
        special = i == 0 and example.messages is None
        piece = tokenizer(text, add_special_tokens=special)["input_ids"]
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    if example.messages is None and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    if labels:
        labels[0] = IGNORE  # nothing comes before the first token to predict it
    return Tokenized(input_ids=ids, labels=labels, source=example.source)


def build_dataset(spec: str, examples: list[Example], tokenizer: Any, max_len: int,
                  truncate: bool = False) -> Dataset:
    """Tokenize and length-check the examples of a spec (from ``load_examples``).

    Over-long examples are an error naming the first one, unless ``truncate``: then they are cut
    to ``max_len`` tokens (the completion's end is lost) and counted.
    """
    tokenized, truncated, dropped = [], 0, 0
    for example in examples:
        t = tokenize(example, tokenizer)
        if len(t.input_ids) > max_len:
            if not truncate:
                raise EvalkitError(
                    f"{t.source} is {len(t.input_ids)} tokens, longer than --max-len {max_len} "
                    "(raise --max-len, or pass --truncate to cut such examples and count them)"
                )
            t = Tokenized(t.input_ids[:max_len], t.labels[:max_len], t.source)
            truncated += 1
        if t.n_target == 0:
            dropped += 1  # its whole completion was cut off: nothing to learn from it
            continue
        tokenized.append(t)
    if not tokenized:
        raise EvalkitError(f"no usable training examples in {spec} at --max-len {max_len}")
    return Dataset(
        spec=spec,
        fingerprint=fingerprint(examples),
        format=_format(examples),
        examples=tokenized,
        truncated=truncated,
        dropped=dropped,
    )
