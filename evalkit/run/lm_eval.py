"""Run one ``lm_eval:`` task on one checkpoint into an evalkit run folder.

lm-eval's ``evaluate`` drives the task (documents, few-shot contexts, requests, filters,
``process_results``, aggregation); evalkit's backend answers through evalkit's cache (see
``evalkit.tasks.lm_eval.make_lm``), and ``evalkit.lm_eval_format`` writes the folder. A finished
folder of the same configuration is reused as is; a killed run, rerun, regenerates nothing it
had answered (the cache holds each answer the moment it arrives).
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path

from evalkit.checkpoints import Checkpoint
from evalkit.errors import EvalkitError
from evalkit.run.format import SCHEMA_VERSION, read_json
from evalkit.run.lm_eval_format import write_run
from evalkit.run.plans import context_length
from evalkit.run.provenance import now, slug, versions
from evalkit.run.store import content_key
from evalkit.models import Backend
from evalkit.tasks import lm_eval


def run_lm_eval_task(checkpoint: Checkpoint, name: str, options, backend: Backend) -> Path:
    """``options`` is the runner's ``RunOptions``; ``backend`` is open (started lazily)."""
    from lm_eval.evaluator import evaluate

    if options.n not in (None, 1):
        raise EvalkitError(f"task {name}: --n is set by the lm-eval task (its `repeats`)")
    bare = name[len(lm_eval.PREFIX):]
    loaded = lm_eval.load_task_dict(name)
    task = loaded["tasks"][bare]
    overrides = {k: v for k, v in (("max_gen_toks", options.max_tokens),
                                   ("temperature", options.temperature)) if v is not None}
    if overrides and task.OUTPUT_TYPE == "generate_until":  # as lm-eval's --gen_kwargs does
        task.set_config(key="generation_kwargs", value=overrides, update=True)
    config = task.dump_config()
    version = str(task.VERSION)
    limit = options.limits.get(name, options.limit)
    loglikelihood = task.OUTPUT_TYPE != "generate_until"
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
                          include=lm_eval.include_paths())
    folder = Path(options.out_dir) / name / f"{slug(checkpoint.name)}-{run_key[:10]}"
    if (folder / "run.json").exists():
        done = read_json(folder / "run.json")
        if done.get("run_key") == run_key and done.get("status") == "complete":
            return folder
    answered = [0]
    lm = lm_eval.make_lm(backend, checkpoint, max_length=max_length, seed=options.seed,
                         backend_options=options.backend_options, max_tokens=options.max_tokens,
                         temperature=options.temperature, use_cache=options.use_cache,
                         on_answer=lambda: answered.__setitem__(0, answered[0] + 1))
    header = {
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
    t0 = time.perf_counter()
    try:
        results = evaluate(lm=lm, task_dict=loaded, limit=limit, log_samples=True,
                           verbosity="WARNING")
    except EvalkitError:
        raise
    except Exception as exc:  # lm-eval's own errors (bad data, a task it cannot score)
        raise EvalkitError(f"lm-eval task '{bare}' failed: {type(exc).__name__}: {exc}") from None
    samples = results["samples"][bare]
    header["backend"] = backend.info()
    total = round(time.perf_counter() - t0, 3)
    return write_run(folder, header, results, bare, samples, extra={
        "timings": {**header["timings"], "finished": now(), "total_s": total},
        "counts": {"generated": answered[0]},
    })
