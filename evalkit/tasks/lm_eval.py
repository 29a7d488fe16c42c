"""lm-evaluation-harness tasks in evalkit: ``--task lm_eval:NAME``.

lm-eval's own ``TaskManager`` builds the documents, few-shot contexts and requests, and lm-eval's
own ``evaluate`` applies the filters, ``process_results`` and aggregation. evalkit only answers
the requests: ``make_lm`` builds an lm-eval ``LM`` that sends them to an evalkit backend (vLLM, hf,
openai; a LoRA adapter on the base's engine) through evalkit's generation cache, so a killed run
re-asks nothing it already got. ``evalkit.lm_eval_run`` turns lm-eval's results
and logged samples into an evalkit run folder; ``evalkit import lm-eval`` uses the same
conversion on lm-eval's own output files.

A group (``lm_eval:mmlu``) stands for its leaf tasks, one run folder each. User task folders
(local data: ``dataset_path: json`` + ``dataset_kwargs.data_files``) come from
``--lm-eval-include`` or ``EVALKIT_LM_EVAL_INCLUDE`` (``os.pathsep``-separated); a folder's task
overrides lm-eval's task of the same name.
"""

from __future__ import annotations

import difflib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from evalkit.errors import EvalkitError
from evalkit.run.store import GenerationCache, content_key

if TYPE_CHECKING:
    from evalkit.checkpoints import Checkpoint
    from evalkit.models import Backend

PREFIX = "lm_eval:"
INCLUDE_ENV = "EVALKIT_LM_EVAL_INCLUDE"
FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed
# Config fields that shape what the model is asked (the prompt-template hash).
_PROMPT_FIELDS = ("doc_to_text", "doc_to_target", "doc_to_choice", "description",
                  "target_delimiter", "fewshot_delimiter", "fewshot_config", "num_fewshot",
                  "output_type", "process_docs", "use_prompt", "test_split", "validation_split")


def is_lm_eval_task(name: str) -> bool:
    return name.startswith(PREFIX)


def include_paths() -> tuple[str, ...]:
    return tuple(p for p in os.environ.get(INCLUDE_ENV, "").split(os.pathsep) if p)


@cache
def _manager(include: tuple[str, ...]):
    import logging

    from lm_eval.tasks import TaskManager

    # lm-eval logs every user task that overrides its own: expected here, not worth a line.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    for p in include:
        if not os.path.isdir(p):
            raise EvalkitError(f"--lm-eval-include: {p} is not a folder")
    return TaskManager(include_path=list(include) or None)


def expand(name: str) -> list[str]:
    """``lm_eval:NAME`` -> the ``lm_eval:`` names of its leaf tasks (a task gives itself)."""
    bare = name[len(PREFIX):]
    manager = _manager(include_paths())
    if bare not in manager.all_tasks:
        close = difflib.get_close_matches(bare, manager.all_tasks, n=3)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise EvalkitError(f"unknown lm-eval task '{bare}'{hint}")
    if bare in manager.all_subtasks:
        return [name]
    return [PREFIX + t for t in _load(bare)["tasks"]]


def _load(bare: str) -> dict:
    try:
        return _manager(include_paths()).load([bare])
    except EvalkitError:
        raise
    except Exception as exc:  # lm-eval raises anything from a bad YAML to a missing dataset
        raise EvalkitError(f"lm-eval task '{bare}' cannot be loaded: "
                           f"{type(exc).__name__}: {exc}") from None


def load_task_dict(name: str) -> dict:
    """lm-eval's task dict for one leaf task, set up as ``simple_evaluate`` sets it up."""
    bare = name[len(PREFIX):]
    loaded = _load(bare)
    if list(loaded["tasks"]) != [bare]:
        raise EvalkitError(f"lm-eval task '{bare}' is a group; expand it first")
    task = loaded["tasks"][bare]
    if task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=FEWSHOT_SEED)
    return loaded


def check_task(name: str, limit: int | None) -> None:
    """Load the task and its documents (before any model loads): errors come early."""
    for leaf in expand(name):
        task = load_task_dict(leaf)["tasks"][leaf[len(PREFIX):]]
        try:
            docs = task.eval_docs
        except Exception as exc:
            raise EvalkitError(f"lm-eval task '{leaf}': no documents ({type(exc).__name__}: "
                               f"{exc})") from None
        if len(docs) == 0:
            raise EvalkitError(f"lm-eval task '{leaf}' has no documents")


def _json_default(obj: object) -> str:
    # Functions in a config (process_docs, metric functions) hash by name, not by address.
    return getattr(obj, "__qualname__", None) or type(obj).__name__


def config_hash(config: dict, fields: Sequence[str] | None = None) -> str:
    picked = {k: v for k, v in config.items() if fields is None or k in fields}
    return content_key(config=json.loads(json.dumps(picked, default=_json_default)))


def prompt_template_hash(config: dict) -> str:
    return config_hash(config, _PROMPT_FIELDS)


def generation_settings(config: dict) -> dict:
    """What run.json records as the run's "generation" (compare pairs on it); derived from
    lm-eval's task config alone, so an imported lm-eval run pairs with an evalkit run."""
    return {"output_type": config.get("output_type"), "num_fewshot": config.get("num_fewshot"),
            "generation_kwargs": config.get("generation_kwargs") if
            config.get("output_type") == "generate_until" else None,
            "repeats": config.get("repeats", 1)}


def _split_at_stops(text: str, until: Sequence[str]) -> str:
    for term in until:  # as lm-eval's HFLM does: cut at each stop sequence in turn
        if term:
            text = text.split(term)[0]
    return text


def make_lm(backend: Backend, checkpoint: Checkpoint, *, max_length: int, seed: int,
            backend_options: dict, max_tokens: int | None = None,
            temperature: float | None = None, use_cache: bool = True,
            on_answer: Callable[[], None] | None = None):
    """An lm-eval ``LM`` whose requests evalkit's backend answers, through evalkit's cache."""
    from lm_eval.api.model import LM

    from evalkit.models import GenRequest
    from evalkit.models.base import LoglikelihoodRequest

    adapter = checkpoint if checkpoint.kind == "adapter" else None
    identity = {"checkpoint": checkpoint.fingerprint, "backend": backend.name,
                "backend_version": backend.version, "backend_options": backend_options}

    class _LM(LM):
        def _answer(self, kind: str, requests: list, build: Callable[[tuple, int], Any],
                    to_lm: Callable[[Any, tuple], Any]) -> list:
            args = [r.args for r in requests]
            # Identical requests (lm-eval's `repeats`) are distinct draws: number them.
            seen: Counter = Counter()
            keyed = []
            for a in args:
                rep = seen[json.dumps(a, sort_keys=True, default=str)]
                seen[json.dumps(a, sort_keys=True, default=str)] += 1
                keyed.append((a, rep, content_key(kind=f"lm_eval:{kind}", args=a, rep=rep,
                                                  max_length=max_length, seed=seed,
                                                  max_tokens=max_tokens,
                                                  temperature=temperature, **identity)))
            store = GenerationCache() if use_cache else None
            out: list = [None] * len(args)
            misses = []
            for i, (a, _, key) in enumerate(keyed):
                hit = store.get(key) if store is not None else None
                if hit is not None:
                    out[i] = to_lm(hit[0], a)
                else:
                    misses.append(i)
            if misses:
                built = [build(keyed[i][0], keyed[i][1]) for i in misses]
                call = backend.generate if kind == "generate_until" else backend.loglikelihood
                for j, result in call(built):
                    value = result[0].__dict__ if kind == "generate_until" else result.__dict__
                    i = misses[j]
                    if store is not None:
                        store.put(keyed[i][2], [value])
                    out[i] = to_lm(value, keyed[i][0])
                    if on_answer is not None:
                        on_answer()
            if store is not None:
                store.close()
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False) -> list:
            return self._answer(
                "loglikelihood", requests,
                lambda a, _: LoglikelihoodRequest(context=a[0], continuation=a[1],
                                                  max_length=max_length, adapter=adapter),
                lambda v, _: (v["logprob"], v["is_greedy"]))

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list:
            return self._answer(
                "loglikelihood_rolling", requests,
                lambda a, _: LoglikelihoodRequest(context="", continuation=a[0],
                                                  max_length=max_length, rolling=True,
                                                  adapter=adapter),
                lambda v, _: v["logprob"])

        def generate_until(self, requests, disable_tqdm: bool = False) -> list:
            def build(a: tuple, rep: int) -> GenRequest:
                kw = dict(a[1])
                until = kw.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                sample = bool(kw.get("do_sample", False)) or (temperature or 0) > 0
                temp = temperature if temperature is not None else float(
                    kw.get("temperature", 1.0 if sample else 0.0))
                return GenRequest(
                    prompt=a[0], max_tokens=max_tokens or int(kw.get("max_gen_toks", 256)),
                    stop=tuple(until), temperature=temp if sample else 0.0,
                    top_p=float(kw.get("top_p") or 1.0), n=1,
                    seed=int(content_key(seed=seed, prompt=a[0], rep=rep)[:8], 16),
                    adapter=adapter)

            def to_lm(v: dict, a: tuple) -> str:
                until = a[1].get("until") or []
                return _split_at_stops(v["text"], [until] if isinstance(until, str) else until)

            return self._answer("generate_until", requests, build, to_lm)

    return _LM()
