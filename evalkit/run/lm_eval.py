"""Run one ``lm_eval:`` task on one checkpoint into an evalkit run folder.

lm-eval's ``evaluate`` drives the task (documents, few-shot contexts, requests, filters,
``process_results``, aggregation); evalkit's backend answers through evalkit's cache (see
``make_lm`` below), and ``evalkit.run.lm_eval_format`` writes the folder. A finished
folder of the same configuration is reused as is. lm-eval scores only once every request is
answered, so samples.jsonl cannot grow item by item as for evalkit's own tasks; instead each
answer goes, the moment it arrives, into the run folder's own answer journal (and the shared
cache), and a killed run, rerun, answers only what the journal lacks, even with ``--no-cache``.
Until lm-eval has scored, run.json says "running", so the folder is never read as results.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError
from evalkit.models import Backend
from evalkit.run.format import SCHEMA_VERSION, RunHeader, read_header, write_header
from evalkit.run.lm_eval_format import write_run
from evalkit.run.plans import context_length
from evalkit.run.provenance import now, slug, versions
from evalkit.run.store import GenerationCache, content_key
from evalkit.tasks import lm_eval

if TYPE_CHECKING:
    from evalkit.run.runner import RunOptions

# The run folder's answer journal (SQLite: a committed answer survives kill -9 of the run).
ANSWERS = "lm_eval-answers.sqlite"


def run_lm_eval_task(checkpoint: Checkpoint, name: str, options: RunOptions,
                     backend: Backend) -> Path:
    """``options`` is the runner's ``RunOptions``; ``backend`` is open (started lazily)."""
    from lm_eval.evaluator import evaluate

    if options.n not in (None, 1):
        raise EvalkitError(f"task {name}: --n is set by the lm-eval task (its `repeats`)")
    bare = name[len(lm_eval.PREFIX):]
    loaded = lm_eval.load_task_dict(name)
    leaves = loaded["tasks"]
    overrides = {k: v for k, v in (("max_gen_toks", options.max_tokens),
                                   ("temperature", options.temperature)) if v is not None}
    for task in leaves.values():
        if overrides and task.OUTPUT_TYPE == "generate_until":  # as lm-eval's --gen_kwargs
            task.set_config(key="generation_kwargs", value=overrides, update=True)
    version, config = lm_eval.run_config(loaded, bare)
    limit = options.limits.get(name, options.limit)
    loglikelihood = any(t.OUTPUT_TYPE != "generate_until" for t in leaves.values())
    if loglikelihood and options.backend == "openai":
        raise EvalkitError(f"task {name} scores loglikelihoods, which the openai backend cannot; "
                           "use --backend vllm or hf")
    max_length = context_length(checkpoint, options) - 2 if loglikelihood else 0
    generation = lm_eval.generation_settings(config)
    spec_hash = lm_eval.config_hash(config)
    run_key = content_key(task=name, version=version, spec=spec_hash,
                          checkpoint=checkpoint.fingerprint, backend=backend.name,
                          backend_options=options.backend_options, generation=generation,
                          max_length=max_length, seed=options.seed, limit=limit,
                          include=lm_eval.include_paths(),
                          # a group's aggregation (aggregate_metric_list) is not in `config`
                          **({"groups": {g.name: g.to_dict() for g in loaded["groups"].values()}}
                             if loaded["groups"] else {}))
    folder = Path(options.out_dir) / name / f"{slug(checkpoint.name)}-{run_key[:10]}"
    if (folder / "run.json").exists():
        done = read_header(folder)
        if done.run_key == run_key and done.status == "complete":
            return folder
        if done.run_key != run_key:
            raise EvalkitError(f"{folder} holds a different run; choose another --out")
    header: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "status": "running", "run_key": run_key,
        "task": {"name": name, "version": version, "spec_hash": spec_hash,
                 "prompt_template_hash": lm_eval.prompt_template_hash(config),
                 "chat_template_hash": None, "file": None,
                 "lm_eval_task": bare, "config_hash": spec_hash},
        "checkpoint": checkpoint.describe(), "backend": backend.info(),
        "generation": generation, "seed": options.seed, "limit": limit,
        "max_length": max_length or None, "data_dir": None,
        "lm_eval_include": list(lm_eval.include_paths()),
        "versions": {**versions(), "lm_eval": metadata.version("lm_eval")},
        "timings": {"started": now()},
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_header(folder, RunHeader.model_validate(header))  # "running": not results yet
    journal = GenerationCache(folder / ANSWERS)
    counts: Counter[str] = Counter()
    lm = make_lm(backend, checkpoint, max_length=max_length, seed=options.seed,
                 backend_options=options.backend_options, max_tokens=options.max_tokens,
                 temperature=options.temperature, use_cache=options.use_cache,
                 journal=journal, on_answer=lambda source: counts.update((source,)))
    t0 = time.perf_counter()
    try:
        results = evaluate(lm=lm, task_dict=loaded, limit=limit, log_samples=True,
                           verbosity="WARNING")
    except EvalkitError:
        raise
    except Exception as exc:  # lm-eval's own errors (bad data, a task it cannot score)
        raise EvalkitError(f"lm-eval task '{bare}' failed: {type(exc).__name__}: {exc}") from None
    finally:
        journal.close()
    header["backend"] = backend.info()
    total = round(time.perf_counter() - t0, 3)
    written = write_run(folder, header, results, bare, results["samples"], extra={
        "timings": {**header["timings"], "finished": now(), "total_s": total},
        "counts": {k: counts[k] for k in ("generated", "cached", "resumed")},
    })
    for suffix in ("", "-wal", "-shm"):  # the samples hold every answer now
        (folder / f"{ANSWERS}{suffix}").unlink(missing_ok=True)
    return written


def _split_at_stops(text: str, until: Sequence[str]) -> str:
    for term in until:  # as lm-eval's HFLM does: cut at each stop sequence in turn
        if term:
            text = text.split(term)[0]
    return text


def make_lm(backend: Backend, checkpoint: Checkpoint, *, max_length: int, seed: int,
            backend_options: dict[str, Any], max_tokens: int | None = None,
            temperature: float | None = None, use_cache: bool = True,
            journal: GenerationCache | None = None,
            on_answer: Callable[[str], None] | None = None) -> Any:
    """An lm-eval ``LM`` whose requests evalkit's backend answers, through evalkit's cache.

    ``journal`` (the run's own answers) is asked first, then the shared cache; each new answer
    goes into both at once. ``on_answer`` hears where each answer came from: "resumed" (the
    journal), "cached" or "generated"."""
    from lm_eval.api.model import LM

    from evalkit.models import GenRequest
    from evalkit.models.base import LoglikelihoodRequest

    adapter = checkpoint if checkpoint.kind == "adapter" else None
    identity = {"checkpoint": checkpoint.fingerprint, "backend": backend.name,
                "backend_version": backend.version, "backend_options": backend_options}

    def _heard(source: str) -> None:
        if on_answer is not None:
            on_answer(source)

    class _LM(LM):  # type: ignore[misc]  # lm-eval ships no type hints
        def _answer(self, kind: str, requests: list[Any],
                    build: Callable[[tuple[Any, ...], int], Any],
                    to_lm: Callable[[Any, tuple[Any, ...]], Any]) -> list[Any]:
            args = [r.args for r in requests]
            # Identical requests (lm-eval's `repeats`) are distinct draws: number them.
            seen: Counter[str] = Counter()
            keyed = []
            for a in args:
                rep = seen[json.dumps(a, sort_keys=True, default=str)]
                seen[json.dumps(a, sort_keys=True, default=str)] += 1
                keyed.append((a, rep, content_key(kind=f"lm_eval:{kind}", args=a, rep=rep,
                                                  max_length=max_length, seed=seed,
                                                  max_tokens=max_tokens,
                                                  temperature=temperature, **identity)))
            store = GenerationCache() if use_cache else None
            sources = [(s, n) for s, n in ((journal, "resumed"), (store, "cached"))
                       if s is not None]
            out: list[Any] = [None] * len(args)
            misses = []
            for i, (a, _, key) in enumerate(keyed):
                for source, name in sources:
                    hit = source.get(key)
                    if hit is not None:
                        out[i] = to_lm(hit[0], a)
                        if journal is not None and source is not journal:
                            journal.put(key, hit)
                        _heard(name)
                        break
                else:
                    misses.append(i)
            if misses:
                built = [build(keyed[i][0], keyed[i][1]) for i in misses]
                call = backend.generate if kind == "generate_until" else backend.loglikelihood
                for j, result in call(built):
                    value = (result[0] if isinstance(result, list) else result).__dict__
                    i = misses[j]
                    for source, _ in sources:
                        source.put(keyed[i][2], [value])
                    out[i] = to_lm(value, keyed[i][0])
                    _heard("generated")
            if store is not None:
                store.close()
            return out

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            return self._answer(
                "loglikelihood", requests,
                lambda a, _: LoglikelihoodRequest(context=a[0], continuation=a[1],
                                                  max_length=max_length, adapter=adapter),
                lambda v, _: (v["logprob"], v["is_greedy"]))

        def loglikelihood_rolling(self, requests: list[Any],
                                  disable_tqdm: bool = False) -> list[Any]:
            return self._answer(
                "loglikelihood_rolling", requests,
                lambda a, _: LoglikelihoodRequest(context="", continuation=a[0],
                                                  max_length=max_length, rolling=True,
                                                  adapter=adapter),
                lambda v, _: v["logprob"])

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            def build(a: tuple[Any, ...], rep: int) -> GenRequest:
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

            def to_lm(v: dict[str, Any], a: tuple[Any, ...]) -> str:
                until = a[1].get("until") or []
                return _split_at_stops(v["text"], [until] if isinstance(until, str) else until)

            return self._answer("generate_until", requests, build, to_lm)

    return _LM()
