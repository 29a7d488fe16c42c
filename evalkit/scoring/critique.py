"""Critique probes: can the model still judge (and fix) a solution?

Two scorers, as in the papers:

- ``critique_judge``: the model states whether a solution is correct (ProcessBench items: and
  the first wrong step). Per item: ``accuracy``, ``accuracy,on_correct`` /
  ``accuracy,on_incorrect`` (the item's label decides which), ``invalid`` (no verdict found:
  counted, and scored wrong), and with ``processbench: true`` ProcessBench's
  ``processbench,acc_error`` (erroneous solutions: the predicted first wrong step is the labelled
  one) and ``processbench,acc_correct`` (correct solutions: the model says so). Corpus metrics
  (scikit-learn): ``balanced_accuracy``, ``f1,correct``, ``f1,incorrect`` and ProcessBench's
  ``processbench_f1``, the harmonic mean of its two accuracies.
- ``critique_correct`` (RealCritic's closed loop): the model critiques, then gives a corrected
  final answer (``\\boxed{}`` or "Final answer:"; code: a corrected function, run against the
  problem's tests in the sandbox, in the program HumanEval's tasks build). Per item:
  ``corrected`` (the corrected answer is right), ``original`` (the judged solution was right:
  the same for every model), ``net_gain`` = corrected - original, ``corrected,on_correct`` (a
  right solution kept right) / ``corrected,on_incorrect`` (a wrong one fixed), ``invalid``.

Verdict extraction (``extract_verdict``), first rule that matches, last match within a rule
(a critique ends with its conclusion):
1. a labelled verdict: ``Verdict: incorrect``, ``Conclusion: the solution is correct``,
   ``Final answer: no`` (also judgement/evaluation/assessment/answer);
2. ``\\boxed{correct}``;
3. a sentence about the solution: ``the solution/answer/reasoning/code/function ... is (not)
   correct|wrong|right|flawed|valid...``;
4. ``no errors`` / ``all steps are correct`` vs ``contains an error`` / ``there is a mistake``;
5. the reply's first word (``Yes``, ``No``, ``Correct.``, ``Incorrect``...).
Words: correct = correct, right, yes, true, valid, not incorrect, not wrong; incorrect =
incorrect, wrong, no, false, invalid, flawed, erroneous, not correct, not right, not valid.
Nothing found: ``[invalid]``. The first wrong step: ``first (incorrect|wrong|error...) step
(is|:) N``, ``the error is in step N``, ``step N is incorrect``; a "correct" verdict means -1.
"""

from __future__ import annotations

import re
import warnings

from pydantic import BaseModel, ConfigDict

from evalkit.scoring.base import Metric, Score, ScoreInput, Scorer, register_scorer
from evalkit.scoring.code import humaneval_program, instruct_program

INVALID = "[invalid]"

_WORDS = (r"(not\s+incorrect|not\s+wrong|not\s+correct|not\s+right|not\s+valid|incorrect|"
          r"correct|wrong|right|yes|no|true|false|invalid|valid|flawed|erroneous)")
_AS_CORRECT = {"correct", "right", "yes", "true", "valid", "not incorrect", "not wrong"}
_SUBJECT = r"(?:solution|answer|reasoning|code|function|implementation|response|proof|it)"
_RULES = [
    re.compile(r"\b(?:verdict|conclusion|judge?ment|evaluation|assessment|final answer|answer)"
               r"\s*(?:is\s*)?[:=\-]\s*(?:the\s+" + _SUBJECT + r"\s+is\s+)?" + _WORDS + r"\b"),
    re.compile(r"\\boxed\{\s*(?:\\text\{\s*)?" + _WORDS + r"\b"),
    re.compile(r"\b" + _SUBJECT + r"\s+(?:is|seems|appears to be|looks)\s+(?:completely\s+|"
               r"entirely\s+|fully\s+|therefore\s+|thus\s+|indeed\s+|mathematically\s+|"
               r"logically\s+)?" + _WORDS + r"\b"),
]
_NO_ERROR = re.compile(r"\b(?:no\s+(?:errors?|mistakes?|issues?|bugs?)\b|all\s+(?:the\s+)?"
                       r"steps\s+are\s+correct)")
_HAS_ERROR = re.compile(r"\b(?:contains?|has|have)\s+(?:an?\s+|one\s+or\s+more\s+)?(?:errors?|"
                        r"mistakes?|bugs?)\b|\bthere\s+(?:is|are)\s+(?:an?\s+)?(?:errors?|"
                        r"mistakes?|bugs?)\b")
_LEADING = re.compile(r"^\W*" + _WORDS + r"\b")
_STEP_RULES = [
    re.compile(r"first\s+(?:incorrect|wrong|erroneous|error|mistaken|flawed|invalid)\s+"
               r"(?:step|paragraph)(?:\s+(?:number|index))?\s*(?:is|:|=|at)?\s*"
               r"(?:step|paragraph)?\s*#?\s*(-?\d+)"),
    re.compile(r"(?:first\s+)?(?:error|mistake)\s+(?:is\s+|occurs\s+|appears\s+)?(?:in|at)\s+"
               r"(?:step|paragraph)\s*#?\s*(\d+)"),
    re.compile(r"(?:step|paragraph)\s*#?\s*(\d+)\s+(?:is|was|contains)\s+(?:the\s+first\s+)?"
               r"(?:incorrect|wrong|erroneous|an?\s+error|a\s+mistake)"),
]


def _clean(text: str) -> str:
    text = re.sub(r"[*_`#]+", " ", text.lower())
    return re.sub(r"[ \t]+", " ", text).strip()


def _as_verdict(word: str) -> str:
    return "correct" if re.sub(r"\s+", " ", word) in _AS_CORRECT else "incorrect"


def extract_verdict(text: str) -> str:
    """``correct``, ``incorrect`` or ``[invalid]`` (rules in the module docstring)."""
    t = _clean(text)
    for rule in _RULES:
        found = rule.findall(t)
        if found:
            return _as_verdict(found[-1])
    marks = [(m.start(), "correct") for m in _NO_ERROR.finditer(t)]
    marks += [(m.start(), "incorrect") for m in _HAS_ERROR.finditer(t)]
    if marks:
        return max(marks)[1]
    first = _LEADING.match(t)
    return _as_verdict(first[1]) if first else INVALID


def extract_first_error_step(text: str, verdict: str) -> int | None:
    """The predicted first wrong step: -1 for a "correct" verdict, None when not stated."""
    if verdict == "correct":
        return -1
    if verdict != "incorrect":
        return None
    t = _clean(text)
    found = [(m.start(), int(m[1])) for rule in _STEP_RULES for m in rule.finditer(t)]
    step = max(found)[1] if found else None
    return step if step is not None and step >= 0 else None


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    processbench: bool = False  # score the first wrong step on items that label it


class CritiqueJudge(Scorer):
    def __init__(self, config: JudgeConfig):
        self.config = config

    def __call__(self, item: ScoreInput) -> Score:
        label = "correct" if item.doc["is_correct"] else "incorrect"
        verdict = extract_verdict(item.completion)
        right = float(verdict == label)
        values = {"accuracy": right, f"accuracy,on_{label}": right,
                  "invalid": float(verdict == INVALID)}
        extracted = {"verdict": verdict}
        target = label
        if self.config.processbench and item.doc.get("error_step") is not None:
            gold = int(item.doc["error_step"])
            step = extract_first_error_step(item.completion, verdict)
            kind = "error" if gold >= 0 else "correct"
            values[f"processbench,acc_{kind}"] = float(step == gold)
            extracted["first_error_step"] = INVALID if step is None else str(step)
            target = f"{label} (first error step {gold})" if gold >= 0 else label
        return Score(values=values, extracted=extracted, target=target)

    def metrics(self, n_samples: int) -> list[Metric]:
        out = [Metric("accuracy", "accuracy"), Metric("accuracy,on_correct", "accuracy,on_correct"),
               Metric("accuracy,on_incorrect", "accuracy,on_incorrect"),
               Metric("invalid", "invalid", higher_is_better=False)]
        if self.config.processbench:
            out += [Metric("processbench,acc_error", "processbench,acc_error"),
                    Metric("processbench,acc_correct", "processbench,acc_correct")]
        return out

    def summary_metrics(self, samples: list[dict]) -> dict[str, dict]:
        from evalkit.scoring.loglikelihood import summary

        return {name: summary(value, len(samples), "corpus", "accuracy")
                for name, value in judge_summary(samples).items()}


def judge_summary(samples: list[dict]) -> dict[str, float]:
    """Classification metrics over all samples (scikit-learn), and ProcessBench's F1."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    if not samples:
        return {}
    y_true = ["correct" if s["scores"].get("accuracy,on_correct") is not None else "incorrect"
              for s in samples]
    y_pred = [s["extracted"]["verdict"] for s in samples]
    with warnings.catch_warnings():  # "[invalid]" is a predicted class no item has
        warnings.simplefilter("ignore")
        out = {"balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred))}
        f1 = f1_score(y_true, y_pred, labels=["correct", "incorrect"], average=None,
                      zero_division=0.0)
    out["f1,correct"], out["f1,incorrect"] = float(f1[0]), float(f1[1])
    err = [s["scores"]["processbench,acc_error"] for s in samples
           if "processbench,acc_error" in s["scores"]]
    ok = [s["scores"]["processbench,acc_correct"] for s in samples
          if "processbench,acc_correct" in s["scores"]]
    if err and ok:
        a, b = sum(err) / len(err), sum(ok) / len(ok)
        out["processbench_f1"] = 2 * a * b / (a + b) if a + b else 0.0
    return out


# ------------------------------------------------------------------ critique and correct

_BOXED = re.compile(r"\\boxed\s*\{")
_FINAL = re.compile(r"final answer\s*(?:is|:)?\s*[:=]?\s*(.+)", re.IGNORECASE)


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, i = 1, starts[-1]
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[starts[-1]:i - 1] if depth == 0 else None


def extract_final_answer(text: str) -> str:
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    found = _FINAL.findall(text)
    return found[-1].strip().rstrip(".") if found else INVALID


def _number(text: str) -> float | None:
    s = re.sub(r"\\(?:text|mathrm|mbox)\{[^}]*\}|\\[,!;:]|\\%|%|\$|\\\$|,(?=\d{3})", "", text)
    s = s.replace("\\left", "").replace("\\right", "").replace(" ", "")
    frac = re.fullmatch(r"(-?)\\d?frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    if frac:
        value = float(frac[2]) / float(frac[3]) if float(frac[3]) else None
        return -value if frac[1] and value is not None else value
    ratio = re.fullmatch(r"(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)", s)
    if ratio:
        return float(ratio[1]) / float(ratio[2]) if float(ratio[2]) else None
    try:
        return float(s)
    except ValueError:
        return None


def answers_match(answer: str, gold: str, multiple_choice: bool = False) -> bool:
    """Numbers compare as numbers (fractions, thousands separators, units in \\text{} dropped),
    multiple-choice answers by their letter, anything else as whitespace-free strings; no
    symbolic equivalence."""
    if answer == INVALID:
        return False
    if multiple_choice:
        letter = re.search(r"\b([A-E])\b", answer.replace("(", " ").replace(")", " "))
        return bool(letter) and letter[1] == gold.strip().strip("()").upper()
    a, g = _number(answer), _number(gold)
    if a is not None and g is not None:
        return abs(a - g) <= 1e-6 * max(1.0, abs(g))
    squash = lambda s: re.sub(r"\s+|\\[,!;]|\\left|\\right|^\$|\$$", "", s).rstrip(".")  # noqa: E731
    return squash(answer) == squash(gold)


def corrected_program(doc: dict, completion: str, fenced: bool) -> str | None:
    """The program that tests a corrected function: HumanEval's own program builders (the
    body after the prompt, or the reply's first ```python block after the prompt's preamble),
    then the problem's tests. None when a reply has no code block."""
    return instruct_program(doc, completion) if fenced else humaneval_program(doc, completion)


class CorrectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str | None = None  # "completion" (body after the prompt) | "fenced" (```python)
    timeout_s: float = 10.0


class CritiqueCorrect(Scorer):
    def __init__(self, config: CorrectConfig):
        self.config = config
        self.needs_sandbox = config.code is not None

    def __call__(self, item: ScoreInput) -> Score:
        original = 1.0 if item.doc["is_correct"] else 0.0
        execution = None
        if self.config.code:
            program = corrected_program(item.doc, item.completion, self.config.code == "fenced")
            extracted = {"answer": "[code]" if program else INVALID}
            ok: float | None = 0.0
            if program is not None:
                from evalkit.sandbox import Limits

                result = item.sandbox.run(program, Limits(timeout_s=self.config.timeout_s))
                execution = {"program": program, **result.to_dict()}
                # A sandbox failure says nothing about the code: the item is not scored.
                ok = None if result.status == "sandbox_error" else float(result.passed)
        else:
            answer = extract_final_answer(item.completion)
            extracted = {"answer": answer}
            ok = float(answers_match(answer, item.target, bool(item.doc.get("multiple_choice"))))
        which = "on_correct" if original else "on_incorrect"
        values = {"original": original, "invalid": float(extracted["answer"] == INVALID)}
        if ok is not None:  # an unscored item has no value (not a zero)
            values |= {"corrected": ok, f"corrected,{which}": ok, "net_gain": ok - original}
        return Score(values=values, extracted=extracted, target=item.target,
                     execution=execution)

    def metrics(self, n_samples: int) -> list[Metric]:
        return [Metric("corrected", "corrected"), Metric("original", "original"),
                Metric("net_gain", "net_gain"),
                Metric("corrected,on_correct", "corrected,on_correct"),
                Metric("corrected,on_incorrect", "corrected,on_incorrect"),
                Metric("invalid", "invalid", higher_is_better=False)]


@register_scorer("critique_judge")
def critique_judge(config: dict) -> Scorer:
    return CritiqueJudge(JudgeConfig(**config))


@register_scorer("critique_correct")
def critique_correct(config: dict) -> Scorer:
    return CritiqueCorrect(CorrectConfig(**config))
