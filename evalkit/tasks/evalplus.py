"""HumanEval+ and MBPP+ (EvalPlus release files): the data, as EvalPlus hands it to a solution.

EvalPlus (0.3.1 is the reference here) stores only inputs; MBPP+'s are JSON, turned back into
tuples, sets and complex numbers as EvalPlus does (``mbpp_deserialize``). Inputs travel to the
sandbox as base64 marshal data, decoded only there. The test programs, the canonical outputs and
the time limits are ``evalkit/scoring/evalplus.py``.
"""

from __future__ import annotations

import binascii
import hashlib
import marshal
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import data_dir as resolve_data_dir
from evalkit.tasks.data import read_file

PHASES = ("base", "plus")
RELEASE_URL = "https://github.com/evalplus/{repo}_release/releases"

# MBPP+ inputs are JSON; EvalPlus turns some back into tuples, sets and complex numbers before
# anything runs (evalplus/data/mbpp.py, mbpp_deserialize_inputs). task id -> rule:
_MBPP_RULES: dict[str, tuple[int, ...]] = {
    "args_to_tuples": (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579,
                       596, 616, 630, 726, 740, 744, 809),
    "args_items_to_tuples": (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614,
                             780),
    "first_items_to_tuples": (75, 413, 444, 753),
    "second_to_tuple": (106, 750),
    "first_to_tuple": (250, 405, 446, 617, 720, 763, 808),
    "args_items_to_tuples_then_args": (259, 401, 445),
    "nested_to_tuples": (580, 615, 791),
    "first_items_to_sets": (115,),
    "float_complex": (124,),
    "complex": (252,),
    "mixed_first_then_tuple": (278,),
    "first_to_tuple_of_three": (307,),
    "dict_values_to_tuples": (722,),
}
_MBPP_RULE = {task: rule for rule, tasks in _MBPP_RULES.items() for task in tasks}


def _tuples_all_the_way(x):
    return tuple(_tuples_all_the_way(v) for v in x) if isinstance(x, list) else x


def mbpp_deserialize(task_id: int, inp: list) -> list | tuple:
    """One MBPP+ input (an argument list) as EvalPlus hands it to the function."""
    rule = _MBPP_RULE.get(task_id)
    if rule is None:
        return inp
    if rule == "args_to_tuples":
        return [tuple(arg) for arg in inp]
    if rule == "args_items_to_tuples":
        return [[tuple(x) for x in arg] for arg in inp]
    if rule == "first_items_to_tuples":  # EvalPlus keeps two arguments only
        return [[tuple(x) for x in inp[0]], inp[1]]
    if rule == "second_to_tuple":
        return [inp[0], tuple(inp[1])]
    if rule == "first_to_tuple":
        return [tuple(inp[0]), inp[1]]
    if rule == "args_items_to_tuples_then_args":
        return [tuple(tuple(x) for x in arg) for arg in inp]
    if rule == "nested_to_tuples":
        return _tuples_all_the_way(inp)
    if rule == "first_items_to_sets":  # an empty list becomes {} (a dict), as in EvalPlus
        return [[set(x) if isinstance(x, list) and x else {} for x in inp[0]]]
    if rule == "float_complex":
        return (float(inp[0]), complex(inp[1]))
    if rule == "complex":
        return [complex(inp[0])]
    if rule == "mixed_first_then_tuple":
        return [tuple(tuple(x) if isinstance(x, list) else x for x in inp[0])]
    if rule == "first_to_tuple_of_three":
        return [tuple(inp[0]), inp[1], inp[2]]
    return [{k: tuple(v) for k, v in inp[0].items()}, *inp[1:]]  # dict_values_to_tuples


# ---------------------------------------------------------------------------- data


def _release(name: str, repo: str, data_dir: str | Path | None) -> tuple[list[dict], str]:
    root = resolve_data_dir(data_dir)
    if root is None:
        raise EvalkitError(f"{name} needs the EvalPlus release file evalplus/{name}.jsonl.gz in "
                           f"the data dir (--data-dir / EVALKIT_DATA_DIR); it is published at "
                           f"{RELEASE_URL.format(repo=repo)}")
    path = root / "evalplus" / f"{name}.jsonl.gz"
    if not path.is_file():
        raise EvalkitError(f"data file evalplus/{name}.jsonl.gz not found in data dir {root} "
                           f"(published at {RELEASE_URL.format(repo=repo)})")
    return read_file(path), hashlib.sha256(path.read_bytes()).hexdigest()


def marshal_b64(value: object) -> str:
    """``value`` as base64 marshal data, the form everything takes into the sandbox."""
    return binascii.b2a_base64(marshal.dumps(value), newline=False).decode()


def _plus_record(r: dict, dataset: str, sha: str, inputs: dict[str, list]) -> dict:
    missing = {"task_id", "prompt", "entry_point", "canonical_solution", "atol"} - set(r)
    if missing:
        raise EvalkitError(f"EvalPlus record {r.get('task_id', '?')} lacks {sorted(missing)}")
    return {**{k: v for k, v in r.items() if k not in ("base_input", "plus_input")},
            "dataset": dataset, "dataset_sha256": sha,
            **{f"n_{phase}": len(inputs[phase]) for phase in PHASES},
            # marshal keeps tuples, sets and complex numbers; decoded only in the sandbox
            **{f"{phase}_inputs_b64": marshal_b64(inputs[phase]) for phase in PHASES}}


def humaneval_plus(split: str, data_dir: str | Path | None) -> list[dict]:
    """HumanEval+ v0.1.10: the 164 HumanEval problems with EvalPlus's inputs."""
    records, sha = _release("HumanEvalPlus", "humanevalplus", data_dir)
    return [_plus_record(r, "humaneval", sha, {p: r[f"{p}_input"] for p in PHASES})
            for r in records]


def mbpp_plus(split: str, data_dir: str | Path | None) -> list[dict]:
    """MBPP+ v0.2.0 (378 problems) in the MBPP prompt's fields: ``text`` (the description),
    ``test_list`` (the original asserts); the few-shot split is MBPP's tasks 2, 3, 4."""
    if split != "test":
        from evalkit.tasks.code import mbpp_shots
        from evalkit.tasks.data import load_records

        return mbpp_shots(load_records("mbpp/mbpp.jsonl", data_dir=data_dir,
                                       hub=("google-research-datasets/mbpp", "full", "prompt")))
    records, sha = _release("MbppPlus", "mbppplus", data_dir)
    out = []
    for r in records:
        number = int(str(r["task_id"]).split("/")[-1])
        inputs = {p: [mbpp_deserialize(number, inp) for inp in r[f"{p}_input"]] for p in PHASES}
        body = r["prompt"].removeprefix('"""\n').removesuffix('\n"""\n')
        tests = [t for t in r["assertion"].strip().split("\n") if t.strip()]
        out.append({**_plus_record(r, "mbpp", sha, inputs),
                    "text": " ".join(line for line in body.split("\n")
                                     if not line.startswith("assert ")),
                    "test_list": tests, "code": r["canonical_solution"]})
    return out

