"""lm-evaluation-harness tasks in evalkit: ``--task lm_eval:NAME``.

lm-eval's own ``TaskManager`` builds the documents, few-shot contexts and requests, and lm-eval's
own ``evaluate`` applies the filters, ``process_results`` and aggregation. evalkit only answers
the requests: ``evalkit.run.lm_eval.make_lm`` builds an lm-eval ``LM`` that sends them to an
evalkit backend (vLLM, hf, openai; a LoRA adapter on the base's engine) through evalkit's
generation cache, so a killed run re-asks nothing it already got. ``evalkit.run.lm_eval`` turns
lm-eval's results and logged samples into an evalkit run folder; ``evalkit import lm-eval``
uses the same conversion on lm-eval's own output files.

A group (``lm_eval:mmlu``) is one run: lm-eval evaluates its subtasks together and aggregates
them as it does (``aggregate_metric_list``); a tag stands for its tasks, one run each. User task
folders (local data: ``dataset_path: json`` + ``dataset_kwargs.data_files``) come from
``--lm-eval-include`` or ``EVALKIT_LM_EVAL_INCLUDE`` (``os.pathsep``-separated); a folder's task
overrides lm-eval's task of the same name.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from functools import cache

from evalkit.errors import EvalkitError
from evalkit.tasks.spec import _hash

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
    """``lm_eval:NAME`` -> the ``lm_eval:`` runs it stands for: a task or a group gives itself
    (a group is one run, aggregated by lm-eval), a tag its tasks."""
    bare = name[len(PREFIX):]
    manager = _manager(include_paths())
    if bare not in manager.all_tasks:
        close = difflib.get_close_matches(bare, manager.all_tasks, n=3)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise EvalkitError(f"unknown lm-eval task '{bare}'{hint}")
    if bare in manager.all_subtasks or bare in manager.all_groups:
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
    """lm-eval's task dict (``tasks``: its leaf tasks, ``groups``) for one task or one group,
    every leaf set up as ``simple_evaluate`` sets it up."""
    bare = name[len(PREFIX):]
    loaded = _load(bare)
    if list(loaded["tasks"]) != [bare] and bare not in loaded["groups"]:
        raise EvalkitError(f"lm-eval task '{bare}' is a tag; expand it first")
    for task in loaded["tasks"].values():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
    return loaded


def run_config(loaded: dict, bare: str) -> tuple[str, dict]:
    """(version, config) of a task, or of a group (``group_config``)."""
    group = loaded["groups"].get(bare)
    if group is None:
        task = loaded["tasks"][bare]
        return str(task.VERSION), task.dump_config()
    members = {g.name: g.child_names for g in [group, *group.get_all_groups()]}
    return group.version, group_config(bare, members, {n: t.dump_config() for n, t in
                                                        loaded["tasks"].items()})


def group_config(name: str, group_subtasks: dict[str, list[str]],
                 configs: dict[str, dict]) -> dict:
    """A group's config as evalkit hashes it: its tree and its leaves' configs, both of which
    lm-eval's results file holds too, so an imported group run pairs with an evalkit one."""
    return {"group": name, "group_subtasks": group_subtasks, "tasks": configs}


def _leaf_configs(config: dict) -> dict[str, dict]:
    return config["tasks"] if "group_subtasks" in config else {"": config}


def check_task(name: str, limit: int | None) -> None:
    """Load the task and its documents (before any model loads): errors come early."""
    for run in expand(name):
        for task in load_task_dict(run)["tasks"].values():
            leaf = task.task_name
            try:
                docs = task.eval_docs
            except Exception as exc:
                raise EvalkitError(f"lm-eval task '{leaf}': no documents "
                                   f"({type(exc).__name__}: {exc})") from None
            if len(docs) == 0:
                raise EvalkitError(f"lm-eval task '{leaf}' has no documents")


def _json_default(obj: object) -> str:
    # Functions in a config (process_docs, metric functions) hash by name, not by address.
    return getattr(obj, "__qualname__", None) or type(obj).__name__


def config_hash(config: dict, fields: Sequence[str] | None = None) -> str:
    picked = {k: v for k, v in config.items() if fields is None or k in fields}
    return _hash({"config": json.loads(json.dumps(picked, default=_json_default))})


def prompt_template_hash(config: dict) -> str:
    leaves = _leaf_configs(config)
    if list(leaves) == [""]:
        return config_hash(config, _PROMPT_FIELDS)
    return _hash({"group_subtasks": config["group_subtasks"],
                  "tasks": {n: config_hash(c, _PROMPT_FIELDS) for n, c in leaves.items()}})


def generation_settings(config: dict) -> dict:
    """What run.json records as the run's "generation" (compare pairs on it); derived from
    lm-eval's task config alone, so an imported lm-eval run pairs with an evalkit run. A group
    whose leaves differ records each leaf's."""
    per_leaf = {n: {"output_type": c.get("output_type"), "num_fewshot": c.get("num_fewshot"),
                    "generation_kwargs": c.get("generation_kwargs") if
                    c.get("output_type") == "generate_until" else None,
                    "repeats": c.get("repeats", 1)} for n, c in _leaf_configs(config).items()}
    settings = list(per_leaf.values())
    if all(s == settings[0] for s in settings):
        return settings[0]
    return {"subtasks": per_leaf}
