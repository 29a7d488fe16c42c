"""Conjugate prompting: is a fine-tune's loss forgotten, or only suppressed?

Kotha et al. (2023, "Understanding catastrophic forgetting in language models via implicit
inference") show that fine-tuning can make a model infer "this is the fine-tuning task" and
suppress abilities it still has; a *conjugate* prompt (same items, asked in a way far from the
fine-tuning data, e.g. translated) brings them back. A conjugate task is an ordinary task whose
file says ``conjugate: {of: <plain task>, transform: <name>}``; it inherits the plain task's
fields and asks the same items (same doc ids) differently.

Transforms (``transform:``) rewrite the docs; register more with ``@register_conjugate``:

- ``format``: nothing to rewrite, the conjugate file's own prompt fields are the new format;
- ``translate``: fields replaced from a user-supplied JSONL (``file:``, relative to the data dir
  or absolute), one object per doc: ``{"doc_id": ..., "<field>": <translated value>, ...}``;
  docs without a line are left out (so are their pairs in the recovery).

``recovery(comparison)`` pairs, item by item, the plain and the conjugate task's base-vs-tuned
deltas of every metric they share:

- forgetting F = mean(base_plain - tuned_plain) (a loss is positive, for higher-is-better);
- recovery R = mean((tuned_conj - base_conj) - (tuned_plain - base_plain)), the part of the loss
  on the plain prompt that the conjugate prompt does not show (a difference in differences, so
  a conjugate prompt that is simply harder for both models does not count as recovery);
- recovered share = R / F.

R has a paired bootstrap CI over items and a sign-flip permutation p-value. Verdict: no
significant forgetting (the plain task's compare row is not "regressed") / "suppressed" (R's CI
lies above 0: the ability is still there) / "forgotten" (it does not).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel

from evalkit import stats as st
from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    from evalkit.comparison import Comparison
    from evalkit.tasks import Doc, Task

Transform = Callable[["list[Doc]", dict, "Task"], "list[Doc]"]
TRANSFORMS: dict[str, Transform] = {}


def register_conjugate(name: str):
    """Register ``transform(docs, config, task) -> docs`` under ``name``."""

    def deco(fn: Transform) -> Transform:
        TRANSFORMS[name] = fn
        return fn

    return deco


def apply_conjugate(task: Task, docs: list[Doc]) -> list[Doc]:
    spec = task.spec.conjugate
    if spec is None:
        return docs
    if spec.transform not in TRANSFORMS:
        raise EvalkitError(f"task {task.name}: unknown conjugate transform '{spec.transform}' "
                           f"(known: {', '.join(sorted(TRANSFORMS))})")
    return TRANSFORMS[spec.transform](docs, dict(spec.model_extra or {}), task)


@register_conjugate("format")
def _format(docs: list[Doc], config: dict, task: Task) -> list[Doc]:
    return docs


@register_conjugate("translate")
def _translate(docs: list[Doc], config: dict, task: Task) -> list[Doc]:
    from evalkit.tasks import Doc

    if not config.get("file"):
        raise EvalkitError(f"task {task.name}: the translate transform needs `file:` (a JSONL "
                           "of {\"doc_id\": ..., <field>: <translation>})")
    path = Path(str(config["file"])).expanduser()
    if not path.is_absolute():
        path = (task.data_dir or task.path.parent) / path
    if not path.exists():
        raise EvalkitError(f"task {task.name}: translation file {path} not found")
    translated: dict[str, dict] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            translated[str(row.pop("doc_id"))] = row
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise EvalkitError(f"{path}:{n} is not a JSON object with a doc_id") from None
    kept = [Doc(d.id, d.index, {**d.data, **translated[d.id]}) for d in docs
            if d.id in translated]
    if not kept:
        raise EvalkitError(f"task {task.name}: no doc id of {path} is a doc of the task")
    return kept


# ------------------------------------------------------------------------------- recovery


class RecoveryRow(BaseModel):
    plain: str  # task names
    conjugate: str
    metric: str
    n_items: int
    forgetting: float  # mean(base - tuned) on the plain prompt, in the metric's good direction
    conjugate_loss: float  # the same on the conjugate prompt
    recovery: float  # forgetting - conjugate_loss, item-paired
    recovery_ci: tuple[float, float]
    recovered_share: float | None  # recovery / forgetting, when forgetting > 0
    recovered_share_ci: tuple[float, float] | None = None
    p_value: float
    plain_verdict: str  # the plain task's compare row
    verdict: Literal["no significant forgetting", "suppressed", "forgotten"]


def conjugate_pairs(tasks: list[str]) -> list[tuple[str, str]]:
    """(plain, conjugate) task pairs among ``tasks`` (from the conjugate tasks' files)."""
    from evalkit.tasks import list_tasks
    from evalkit.tasks.spec import load_spec

    known, pairs = list_tasks(), []
    for name in tasks:
        if name not in known:  # a run of a task this checkout does not have
            continue
        try:
            spec = load_spec(known[name])
        except EvalkitError:
            continue
        if spec.conjugate and spec.conjugate.of in tasks:
            pairs.append((spec.conjugate.of, name))
    return pairs


def recovery(comparison: Comparison, pairs: list[tuple[str, str]] | None = None
             ) -> list[RecoveryRow]:
    """Recovery rows for every (plain, conjugate) pair of tasks in the comparison."""
    by_task = {t.task: t for t in comparison.tasks}
    if pairs is None:
        pairs = conjugate_pairs(list(by_task))
    rows = []
    for plain, conj in pairs:
        if plain not in by_task or conj not in by_task:
            continue
        p, c = by_task[plain], by_task[conj]
        for metric, spec in p.base.metrics.items():
            if metric in c.base.metrics:
                row = _recovery_row(comparison, plain, conj, metric, spec.higher_is_better,
                                    [_values(p.base, metric), _values(p.tuned, metric),
                                     _values(c.base, metric), _values(c.tuned, metric)])
                if row is not None:
                    rows.append(row)
    return rows


def _values(scores: Any, metric: str) -> dict[str, float]:
    m = scores.metrics[metric]
    return {d: v for d, v in zip(scores.doc_ids, m.values, strict=True) if v is not None}


def _recovery_row(comparison: Comparison, plain: str, conj: str, metric: str,
                  higher_is_better: bool, sides: list[dict[str, float]]) -> RecoveryRow | None:
    docs = [d for d in sides[0] if all(d in s for s in sides[1:])]
    if len(docs) < 2:
        return None
    bp, tp, bc, tc = (np.array([s[d] for d in docs]) for s in sides)
    settings = comparison.settings
    sign = 1.0 if higher_is_better else -1.0
    loss_plain, loss_conj = sign * (bp - tp), sign * (bc - tc)
    d = loss_plain - loss_conj
    rng = np.random.default_rng([settings.seed, len(docs)])
    means = st.bootstrap_means(np.vstack([loss_plain, d]), resamples=settings.resamples,
                               seed=rng)
    alpha = (1 - settings.confidence) / 2
    low, high = np.quantile(means[:, 1], [alpha, 1 - alpha])
    forgetting = float(loss_plain.mean())
    share = share_ci = None
    if forgetting > 0:
        share = float(d.mean()) / forgetting
        ok = means[:, 0] > 0
        if ok.any():
            ratios = means[ok, 1] / means[ok, 0]
            share_ci = tuple(float(x) for x in np.quantile(ratios, [alpha, 1 - alpha]))
    p = st.paired_permutation_test(np.zeros_like(d), d, resamples=settings.resamples, seed=rng)
    row = next((r for r in comparison.rows if r.task == plain and r.metric == metric), None)
    plain_verdict = row.verdict if row else "untested"
    if plain_verdict != "regressed":
        verdict = "no significant forgetting"
    else:
        verdict = "suppressed" if low > 0 else "forgotten"
    return RecoveryRow(plain=plain, conjugate=conj, metric=metric, n_items=len(docs),
                       forgetting=forgetting, conjugate_loss=float(loss_conj.mean()),
                       recovery=float(d.mean()), recovery_ci=(float(low), float(high)),
                       recovered_share=share, recovered_share_ci=share_ci, p_value=float(p),
                       plain_verdict=plain_verdict, verdict=verdict)


def _share_text(row: RecoveryRow) -> str:
    # A share of forgetting only means something when there is significant forgetting: with a
    # 4 pp drop inside the noise, "350% recovered" would be read as a finding.
    if row.recovered_share is None or row.verdict == "no significant forgetting":
        return "—"
    return f"{100 * row.recovered_share:.0f}%"


def recovery_markdown(rows: list[RecoveryRow]) -> str:
    if not rows:
        return ""
    lines = ["#### Forgetting and conjugate-prompt recovery", "",
             "| plain → conjugate | metric | n | forgetting (pp) | conjugate loss (pp) | "
             "recovery (pp) | 95% CI | recovered | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        share = _share_text(r)
        lines.append(f"| {r.plain} → {r.conjugate} | `{r.metric}` | {r.n_items} | "
                     f"{100 * r.forgetting:+.1f} | {100 * r.conjugate_loss:+.1f} | "
                     f"{100 * r.recovery:+.1f} | [{100 * r.recovery_ci[0]:+.1f}, "
                     f"{100 * r.recovery_ci[1]:+.1f}] | {share} | {r.verdict} |")
    return "\n".join(lines) + "\n"


def recovery_table(rows: list[RecoveryRow]):  # -> rich.table.Table
    from rich.table import Table

    table = Table(title="forgetting and conjugate-prompt recovery (pp; recovery = forgetting "
                        "on the plain prompt - loss on the conjugate prompt)")
    for name in ("plain → conjugate", "metric", "n", "forgetting", "conj. loss", "recovery",
                 "95% CI", "recovered", "verdict"):
        table.add_column(name, justify="left" if name in ("plain → conjugate", "metric",
                                                          "verdict") else "right")
    for r in rows:
        share = _share_text(r)
        table.add_row(f"{r.plain} → {r.conjugate}", r.metric, str(r.n_items),
                      f"{100 * r.forgetting:+.1f}", f"{100 * r.conjugate_loss:+.1f}",
                      f"{100 * r.recovery:+.1f}",
                      f"[{100 * r.recovery_ci[0]:+.1f}, {100 * r.recovery_ci[1]:+.1f}]", share,
                      r.verdict)
    return table
