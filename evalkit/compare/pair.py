"""Pairing: match runs by task and refuse (one line naming what differs) runs that cannot be
paired item by item: other task version, generation settings, items, prompts or metrics."""

from __future__ import annotations

from collections.abc import Sequence

from evalkit.compare.load import RunData, refuse_duplicate_tasks
from evalkit.errors import EvalkitError


def _describe(values: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{v}'" for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def check_pairable(base: RunData, tuned: RunData, labels: tuple[str, str] = ("base", "tuned")
                   ) -> None:
    """Raise ``EvalkitError`` naming what differs when two runs cannot be paired item by item.

    ``labels`` name the two sides in messages (the gate says "baseline" and "candidate").
    """
    b, t = base.scores, tuned.scores
    lb, lt = labels
    if b.task != t.task:
        raise EvalkitError(f"cannot pair runs of different tasks: '{b.task}' vs '{t.task}'")
    if b.version != t.version:
        raise EvalkitError(f"task '{b.task}' versions differ ({b.version} in {lb} vs "
                           f"{t.version} in {lt}); rerun both with the same task version")
    if b.generation != t.generation:
        keys = sorted(set(b.generation) | set(t.generation))
        diffs = [f"{k}: {b.generation.get(k)!r} vs {t.generation.get(k)!r}"
                 for k in keys if b.generation.get(k) != t.generation.get(k)]
        raise EvalkitError(f"task '{b.task}': generation settings differ, {lb} vs {lt} "
                           f"({'; '.join(diffs)}); runs must use identical settings to be paired")
    b_docs, t_docs = set(b.doc_ids), set(t.doc_ids)
    only_base = [d for d in b.doc_ids if d not in t_docs]
    only_tuned = [d for d in t.doc_ids if d not in b_docs]
    if only_base or only_tuned:
        raise EvalkitError(
            f"task '{b.task}': the runs cover different items ({len(only_base)} only in {lb} "
            f"{_describe(only_base)}; {len(only_tuned)} only in {lt} {_describe(only_tuned)}); "
            "rerun both with the same --limit")
    tuned_hash = dict(zip(t.doc_ids, t.prompt_hashes, strict=True))
    differ = [d for d, h in zip(b.doc_ids, b.prompt_hashes, strict=True) if tuned_hash[d] != h]
    if differ:
        why = []
        if b.prompt_template_hash != t.prompt_template_hash:
            why.append("the prompt template differs")
        if b.chat_template_hash != t.chat_template_hash:
            why.append("the chat template differs")
        reason = f" ({' and '.join(why)})" if why else ""
        raise EvalkitError(
            f"task '{b.task}': prompts differ on {len(differ)} of {len(b.doc_ids)} items, e.g. "
            f"doc {_describe(differ, 1)}{reason}; refusing to pair answers to different prompts")
    if base.samples is not None and tuned.samples is not None:
        for doc in b.doc_ids:
            if set(base.samples[doc]) != set(tuned.samples[doc]):
                raise EvalkitError(f"task '{b.task}': doc '{doc}' has sample indices "
                                   f"{sorted(base.samples[doc])} in {lb} but "
                                   f"{sorted(tuned.samples[doc])} in {lt}")
    for name, mb in b.metrics.items():
        mt = t.metrics.get(name)
        if mt is None:
            raise EvalkitError(f"task '{b.task}': metric '{name}' is missing from the {lt} run")
        spec_b = (mb.aggregation, mb.score_key, mb.k, mb.higher_is_better)
        spec_t = (mt.aggregation, mt.score_key, mt.k, mt.higher_is_better)
        if spec_b != spec_t:
            raise EvalkitError(f"task '{b.task}': metric '{name}' is defined differently "
                               f"(aggregation, score_key, k, higher_is_better: {spec_b} vs "
                               f"{spec_t})")


def pair_by_task(base_runs: Sequence[RunData], tuned_runs: Sequence[RunData],
                 tasks: Sequence[str] | None = None, *, require_all_base: bool = False,
                 labels: tuple[str, str] = ("base", "tuned")
                 ) -> tuple[list[tuple[RunData, RunData]], list[str]]:
    """Match runs by task name. Returns the pairs and notes about tasks left unpaired.

    ``tasks`` restricts (and orders) the pairing and each named task must exist on both sides;
    ``require_all_base`` makes every base task mandatory (the gate's rule for baselines).
    """
    lb, lt = labels
    refuse_duplicate_tasks(base_runs, lb)
    refuse_duplicate_tasks(tuned_runs, lt)
    by_base = {r.task: r for r in base_runs}
    by_tuned = {r.task: r for r in tuned_runs}
    notes: list[str] = []
    if tasks:
        for name in tasks:
            for side, runs in ((lb, by_base), (lt, by_tuned)):
                if name not in runs:
                    raise EvalkitError(f"task '{name}' has no run on the {side} side "
                                       f"(found: {', '.join(sorted(runs)) or 'none'})")
        names = list(tasks)
    else:
        missing = [n for n in by_base if n not in by_tuned]
        if missing and require_all_base:
            raise EvalkitError(f"the {lt} has no run of {lb} task(s) {', '.join(missing)}")
        names = [n for n in by_base if n in by_tuned]
        notes += [f"task '{n}' only in {lb}, not compared" for n in missing]
        notes += [f"task '{n}' only in {lt}, not compared" for n in by_tuned if n not in by_base]
        if not names:
            raise EvalkitError(f"no task in common ({lb}: {', '.join(sorted(by_base))}; {lt}: "
                               f"{', '.join(sorted(by_tuned))})")
    return [(by_base[n], by_tuned[n]) for n in names], notes
