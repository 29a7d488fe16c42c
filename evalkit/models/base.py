"""The one small interface every generation backend implements."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    from evalkit.checkpoints import Checkpoint


@dataclass(frozen=True)
class GenRequest:
    """One prompt to complete ``n`` times. ``adapter`` selects a LoRA adapter served alongside
    the base model (the vLLM backend sends it as a LoRA request on the same engine)."""

    prompt: str
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    adapter: Checkpoint | None = None
    item: str | None = None  # the doc id: a distributed backend places requests by it


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop sequence) | "length"
    n_prompt_tokens: int
    n_completion_tokens: int


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score ``continuation`` after ``context``, as lm-eval's ``loglikelihood`` does.

    With ``rolling`` the whole ``continuation`` is scored in windows of ``max_length`` tokens
    (lm-eval's ``loglikelihood_rolling``, for perplexity) and ``context`` is ignored.
    ``max_length`` (the most tokens the model sees at once) travels with the request so every
    backend cuts the very same windows.
    """

    context: str
    continuation: str
    max_length: int
    rolling: bool = False
    adapter: Checkpoint | None = None
    item: str | None = None  # the doc id: a distributed backend places requests by it


@dataclass(frozen=True)
class Loglikelihood:
    logprob: float  # summed over the continuation's tokens
    is_greedy: bool  # every continuation token is the model's argmax
    n_tokens: int  # continuation tokens scored


# (context ids, continuation ids): the model reads context + continuation[:-1] and is scored on
# continuation; len(context) + len(continuation) <= max_length + 1.
Window = tuple[list[int], list[int]]


@dataclass
class Backend:
    """Base class: subclasses implement ``generate`` and set ``name``/``version``.

    ``generate`` yields ``(request index, completions)`` as requests FINISH, not in input order,
    so the caller can persist each one at once: a killed run loses only what was in flight.
    """

    name: str = "base"
    version: str = ""
    options: dict = field(default_factory=dict)
    engine_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def generate(self, requests: Sequence[GenRequest]) -> Iterator[tuple[int, list[Completion]]]:
        raise NotImplementedError

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]
                      ) -> Iterator[tuple[int, Loglikelihood]]:
        """Yields ``(request index, result)`` as requests finish, like ``generate``."""
        raise EvalkitError(f"the {self.name} backend cannot score loglikelihood tasks "
                           "(multiple choice, perplexity); use --backend vllm or hf")

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "engine_id": self.engine_id,
                "options": self.options}

    def close(self) -> None:
        """Free the engine's memory (models, KV cache, worker processes)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Truncate at the earliest stop sequence (not included), as vLLM and lm-eval do."""
    cut = min((i for s in stop if s and (i := text.find(s)) != -1), default=-1)
    return (text[:cut], True) if cut != -1 else (text, False)


# ------------------------------------------------------------------ loglikelihood (lm-eval's)


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The tokenizer's own special tokens, as lm-eval's HF model; but never a second BOS when the
    # text already starts with one (a chat-templated prompt).
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def prefix_token(tokenizer: Any) -> int:
    """What an empty context conditions on (lm-eval's ``prefix_token_id``)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None \
        else tokenizer.eos_token_id


def encode_pair(tokenizer: Any, context: str, continuation: str) -> Window:
    """lm-eval's ``_encode_pair``: trailing spaces of the context move to the continuation, the
    whole string is encoded once and the continuation is what follows the context's tokens
    (so a merge across the boundary is attributed to the continuation)."""
    if not context:  # condition on the prefix token (unless the text starts with it)
        ids = tokenizer.encode(continuation, add_special_tokens=False)
        prefix = prefix_token(tokenizer)
        return ([prefix], ids) if not ids or ids[0] != prefix else (ids[:1], ids[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = _encode(tokenizer, context + continuation)
    context_ids = _encode(tokenizer, context)
    return context_ids, whole[len(context_ids):]


def rolling_windows(tokens: list[int], prefix: int, max_length: int) -> list[Window]:
    """lm-eval's ``get_rolling_token_windows(context_len=1)`` + ``make_disjoint_window``: every
    token is predicted exactly once, each with as much preceding context as fits."""
    windows: list[Window] = []
    if not tokens:
        return windows
    first = min(max_length, len(tokens))
    windows.append(([prefix], tokens[:first]))
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_length)
        end = done + n
        windows.append((tokens[max(end - max_length - 1, 0):done], tokens[done:end]))
        done = end
    return windows


def request_windows(tokenizer: Any, request: LoglikelihoodRequest) -> list[Window]:
    if request.rolling:
        return rolling_windows(_encode(tokenizer, request.continuation), prefix_token(tokenizer),
                               request.max_length)
    context, continuation = encode_pair(tokenizer, request.context, request.continuation)
    if not continuation:
        raise EvalkitError(f"nothing to score: continuation {request.continuation!r} has no "
                           "tokens")
    if len(continuation) > request.max_length:
        raise EvalkitError(f"a continuation of {len(continuation)} tokens does not fit in "
                           f"max_length {request.max_length}")
    # lm-eval keeps the last max_length + 1 tokens of context + continuation.
    return [(context[-(request.max_length + 1 - len(continuation)):], continuation)]


ScoreWindows = Callable[[list[tuple[list[int], list[int], Any]]],
                        Iterator[tuple[int, float, bool]]]


def score_requests(requests: Sequence[LoglikelihoodRequest], tokenizer: Any,
                   score_windows: ScoreWindows) -> Iterator[tuple[int, Loglikelihood]]:
    """Cut requests into windows, let the backend score them (``score_windows`` yields
    ``(window index, logprob sum, is_greedy)`` in any order) and yield each request as soon as
    all of its windows are in."""
    windows, owner = [], []
    for i, r in enumerate(requests):
        for context, continuation in request_windows(tokenizer, r):
            windows.append((context, continuation, r.adapter))
            owner.append(i)
    left: dict[int, int] = defaultdict(int)
    for i in owner:
        left[i] += 1
    acc: dict[int, list] = defaultdict(lambda: [0.0, True, 0])
    for i in range(len(requests)):  # a rolling request over empty text has no windows
        if not left[i]:
            yield i, Loglikelihood(logprob=0.0, is_greedy=True, n_tokens=0)
    for j, logprob, greedy in score_windows(windows):
        i = owner[j]
        total = acc[i]
        total[0] += logprob
        total[1] = total[1] and greedy
        total[2] += len(windows[j][1])
        left[i] -= 1
        if not left[i]:
            yield i, Loglikelihood(logprob=total[0], is_greedy=total[1], n_tokens=total[2])
