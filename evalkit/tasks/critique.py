"""Data for the critique probes: solutions to judge, with correct/incorrect labels.

Every record has ``problem``, ``solution``, ``steps`` (the solution in numbered pieces),
``is_correct`` (the label), ``error_step`` (0-based index of the first wrong step when known,
-1 when every step is right, None when only the final answer is labelled), ``gold`` (the
problem's reference final answer) and ``source``.

- gsm8k: ProcessBench's 400 GSM8K solutions (step labels; correct = no wrong step) interleaved
  with OpenAI's labelled GSM8K model solutions (``example_model_solutions.jsonl``, the 175B
  verifier-selected one per question; ``is_correct`` labels, steps = its lines), so any
  ``--limit`` takes both.
- realcritic: RealCritic's mix_data (half correct, half wrong solutions) of its 7 tasks.
- code: every HumanEvalPack Python problem twice, with the correct and with the buggy body.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from evalkit.paths import data_dir as resolve_data_dir
from evalkit.tasks.data import load_records

REALCRITIC_TASKS = ("gsm8k", "math", "college_math", "minerva_math", "mmlu_stem",
                    "arc-challenge", "olympiadbench")
_CALC = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations
_CHECK_CALL = re.compile(r"\n\s*check\(\w+\)\s*$")  # HumanEvalPack's tests end calling it


def gsm8k(split: str, data_dir: str | Path | None) -> list[dict]:
    answers = {r["question"].strip(): r["answer"].split("####")[-1].strip()
               for r in load_records("gsm8k/test.jsonl", hub=("openai/gsm8k", "main", "test"),
                                     data_dir=data_dir)}
    pb = [{"id": f"processbench/{r['id']}", "source": "processbench", "problem": r["problem"],
           "steps": list(r["steps"]), "solution": "\n\n".join(r["steps"]),
           "is_correct": r["label"] == -1, "error_step": int(r["label"]),
           "gold": answers.get(r["problem"].strip(), "")}
          for r in load_records("processbench/gsm8k.json", hub=("Qwen/ProcessBench", None, "gsm8k"),
                                data_dir=data_dir)]
    openai = []
    for i, r in enumerate(load_records("gsm8k/example_model_solutions.jsonl", data_dir=data_dir)):
        solution = _CALC.sub("", r["175b_verification"]["solution"]).strip()
        openai.append({"id": f"gsm8k-solutions/{i}", "source": "openai-175b-verification",
                       "problem": r["question"], "steps": solution.splitlines(),
                       "solution": solution, "is_correct": bool(
                           r["175b_verification"]["is_correct"]),
                       "error_step": None,
                       "gold": r["ground_truth"].rsplit("A:", 1)[-1].strip()})
    mixed = [x for pair in zip(pb, openai, strict=False) for x in pair]
    return mixed + openai[len(pb):]


def realcritic(split: str, data_dir: str | Path | None) -> list[dict]:
    records = []
    for task in REALCRITIC_TASKS:
        for r in load_records(f"realcritic/mix_data/{task}/test.jsonl", data_dir=data_dir):
            label = r["previous_score"]
            label = label[0] if isinstance(label, list) else ast.literal_eval(str(label))[0]
            steps = [p for p in re.split(r"\n\s*\n", r["reasoning"].strip()) if p.strip()]
            records.append({"id": f"{task}/{r['idx']}", "source": task,
                            "problem": r["question"], "solution": r["reasoning"],
                            "steps": steps, "is_correct": bool(label), "error_step": None,
                            "gold": str(r["gt"]), "multiple_choice": task in (
                                "arc-challenge", "mmlu_stem")})
    return records


def code(split: str, data_dir: str | Path | None) -> list[dict]:
    root = resolve_data_dir(data_dir)
    if root is not None:
        records = load_records("humanevalpack/python/humanevalpack.jsonl", data_dir=data_dir)
    else:
        records = load_records(None, hub=("bigcode/humanevalpack", "python", "test"))
    out = []
    for r in records:
        for kind, body in (("correct", r["canonical_solution"]), ("buggy", r["buggy_solution"])):
            out.append({"id": f"{r['task_id']}/{kind}", "source": kind, "problem": r["prompt"],
                        "solution": r["prompt"] + body, "steps": (r["prompt"] + body)
                        .splitlines(), "is_correct": kind == "correct", "error_step": None,
                        "gold": "", "prompt": r["prompt"], "body": body,
                        # HumanEval's shape: the program builders add check(entry_point)
                        "test": _CHECK_CALL.sub("", r["test"]).rstrip() + "\n",
                        "entry_point": r["entry_point"], "instruction": r["instruction"],
                        "bug_type": r["bug_type"] if kind == "buggy" else ""})
    return out
