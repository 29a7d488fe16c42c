"""FineTuneBench scoring without a hosted judge: normalized answers, exact and contained.

The paper (Wu, Wu & Zou 2024, arXiv:2411.05059; its ``eval_prompt``) grades answers with an
LLM judge that says whether a short guess is "Correct" given the question, the gold answer and
its context: a different number is wrong (``-5`` is not ``5``), the same value written another
way is right (``fifty five``, ``55``; ``.5``, ``0.5``). Without a judge, an answer is compared
with the gold answer after ``normalize``: NFKC, lower case, curly quotes straightened, the
unicode minus (U+2212) read as ``-``, thousands separators and currency/percent signs dropped,
number words up to ninety-nine as digits (``fifty-five`` and ``fifty five``; ``minus five``),
articles dropped, numbers in canonical form (``126.0`` -> ``126``, ``.5`` -> ``0.5``, a sign
kept: ``-5`` is its own token), ``n/a`` kept as one token, then split into word/number tokens.
Only the first non-empty line of the response is read (models often add an explanation).

- ``answer,exact``: the response's tokens equal the gold answer's;
- ``answer,contains``: the gold tokens appear contiguously in the response's (token boundaries:
  ``126`` is not in ``1260``); a Yes/No gold answer is compared with the response's first
  yes/no word; a ``None`` gold answer (latest_news date_changed, the negative control) is
  matched by an abstention (``none``, ``unknown``, ``I don't know``, ...);
- ``old_answer,contains`` (update sets, ``old_field: answer_before``): the same test against the
  pre-update fact; the share still answering the OLD fact (lower is better).

``--judge CKPT`` adds ``answer,judge`` from a second model (``evalkit.run.judge``).
"""

from __future__ import annotations

import re
import unicodedata

from pydantic import BaseModel, ConfigDict

from evalkit.scoring.base import Metric, Score, ScoreInput, Scorer, register_scorer

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in
                                                         enumerate(_TENS)}
# A leading "-" is a sign only where it cannot join two words or numbers ("covid-19", "23-13").
_TOKEN = re.compile(r"\bn/a\b|(?:(?<![\w.])-)?(?:\d+(?:[.:/-]\d+)*|(?<!\w)\.\d+)"
                    r"|[^\W\d_]+(?:'[^\W\d_]+)*")
_DECIMAL = re.compile(r"(-?)(\d*)\.(\d+)")
_ABSTAIN = re.compile(r"\b(?:none|unknown|n/a|not (?:known|available|sure|certain)|"
                      r"(?:do not|don't|cannot|can't|can not) (?:know|answer|be answered|say|"
                      r"determine)|no (?:information|answer|data|record))\b")


def normalize(text: str) -> list[str]:
    """Tokens of an answer after normalization (see the module docstring)."""
    s = unicodedata.normalize("NFKC", text).lower()
    s = s.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
    s = s.replace("\u201d", '"').replace("\u2212", "-")  # NFKC keeps the unicode minus
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,950 -> 1950
    s = re.sub(r"\b([a-z]+)-([a-z]+)\b",
               lambda m: str(_NUMBER_WORDS[m[1]] + _NUMBER_WORDS[m[2]])
               if m[1] in _TENS and _NUMBER_WORDS.get(m[2], 10) < 10 else m[0], s)
    words = [w for w in _TOKEN.findall(s) if w not in ("a", "an", "the")]
    tokens: list[str] = []
    i = 0
    while i < len(words):
        word, nxt = words[i], words[i + 1] if i + 1 < len(words) else ""
        if word in _TENS and 0 < _NUMBER_WORDS.get(nxt, 10) < 10:  # "fifty five" = 55
            word, i = str(_NUMBER_WORDS[word] + _NUMBER_WORDS[nxt]), i + 1
        tokens.append(_canonical(str(_NUMBER_WORDS.get(word, word))))
        i += 1
    # "minus five" / "negative 5": the sign, like a written "-5".
    out: list[str] = []
    for tok in tokens:
        if out and out[-1] in ("minus", "negative") and re.fullmatch(r"\d+(?:\.\d+)?", tok):
            out[-1] = _canonical("-" + tok)
        else:
            out.append(tok)
    return out


def _canonical(tok: str) -> str:
    """126.0 -> 126, 7.50 -> 7.5, .5 -> 0.5, -0 -> 0; other tokens unchanged."""
    match = _DECIMAL.fullmatch(tok)
    if match:
        sign, whole, frac = match.groups()
        frac = frac.rstrip("0")
        tok = f"{sign}{whole.lstrip('0') or '0'}" + (f".{frac}" if frac else "")
    if re.fullmatch(r"-0+", tok):
        return "0"
    return tok


def first_line(response: str) -> str:
    lines = [line.strip() for line in response.strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return re.sub(r"^(?:answer|a)\s*:\s*", "", line, flags=re.IGNORECASE)


def contains(response: str, gold: str) -> bool:
    """Is the gold answer in the response (see the module docstring for yes/no and None)?"""
    gold_tokens, said = normalize(gold), normalize(first_line(response))
    if gold_tokens == ["none"]:
        return bool(_ABSTAIN.search(" ".join(said)))
    if gold_tokens in (["yes"], ["no"]):
        first = next((t for t in said if t in ("yes", "no")), None)
        return first == gold_tokens[0]
    n = len(gold_tokens)
    return n > 0 and any(said[i:i + n] == gold_tokens for i in range(len(said) - n + 1))


def exact(response: str, gold: str) -> bool:
    return normalize(first_line(response)) == normalize(gold)


class FineTuneBenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old_field: str | None = None  # update sets: the field holding the pre-update answer
    judge: dict | None = None  # read by evalkit.run.judge, not here


class FineTuneBench(Scorer):
    def __init__(self, config: FineTuneBenchConfig):
        self.config = config

    def __call__(self, item: ScoreInput) -> Score:
        line = first_line(item.completion)
        values = {"answer,exact": float(exact(item.completion, item.target)),
                  "answer,contains": float(contains(item.completion, item.target))}
        if self.config.old_field:
            values["old_answer,contains"] = float(
                contains(item.completion, str(item.doc[self.config.old_field])))
        return Score(values=values, extracted={"answer": line}, target=item.target)

    def metrics(self, n_samples: int) -> list[Metric]:
        out = [Metric("answer,exact", "answer,exact"),
               Metric("answer,contains", "answer,contains")]
        if self.config.old_field:
            out.append(Metric("old_answer,contains", "old_answer,contains",
                              higher_is_better=False))
        return out


@register_scorer("finetunebench")
def finetunebench(config: dict) -> Scorer:
    return FineTuneBench(FineTuneBenchConfig(**config))
