"""Conjugate-prompt recovery: is a fine-tune's loss forgotten, or only suppressed?

The conjugate tasks themselves (and their transforms) are in ``evalkit.tasks.conjugate``.
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

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from evalkit import markdown
from evalkit import stats as st
from evalkit.compare.rng import row_rng
from evalkit.compare.schema import Comparison, RecoveryRow
from evalkit.errors import EvalkitError
from evalkit.markdown import Code

if TYPE_CHECKING:
    from rich.table import Table

# ------------------------------------------------------------------------------- recovery


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
    rng = row_rng(settings.seed, plain, conj, metric)
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
            q_low, q_high = np.quantile(ratios, [alpha, 1 - alpha])
            share_ci = (float(q_low), float(q_high))
    p = st.paired_permutation_test(np.zeros_like(d), d, resamples=settings.resamples, seed=rng)
    row = next((r for r in comparison.rows if r.task == plain and r.metric == metric), None)
    plain_verdict = row.verdict if row else "untested"
    verdict: Literal["no significant forgetting", "suppressed", "forgotten"]
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


_RECOVERY_COLUMNS = [("plain → conjugate", "left"), ("metric", "left"), ("n", "right"),
                     ("forgetting", "right"), ("conj. loss", "right"), ("recovery", "right"),
                     ("95% CI", "right"), ("recovered", "right"), ("verdict", "left")]
_MARKDOWN_NAMES = {"forgetting": "forgetting (pp)", "conj. loss": "conjugate loss (pp)",
                   "recovery": "recovery (pp)"}


def _recovery_cells(r: RecoveryRow) -> list[Any]:
    """A row's cells as plain text: what both the terminal and Markdown tables show."""
    return [f"{r.plain} → {r.conjugate}", r.metric, str(r.n_items), f"{100 * r.forgetting:+.1f}",
            f"{100 * r.conjugate_loss:+.1f}", f"{100 * r.recovery:+.1f}",
            f"[{100 * r.recovery_ci[0]:+.1f}, {100 * r.recovery_ci[1]:+.1f}]", _share_text(r),
            r.verdict]


def recovery_markdown(rows: list[RecoveryRow]) -> str:
    if not rows:
        return ""
    body = []
    for r in rows:
        cells = _recovery_cells(r)
        cells[1] = Code(r.metric)
        body.append(cells)
    columns = [(_MARKDOWN_NAMES.get(n, n), j) for n, j in _RECOVERY_COLUMNS]
    return ("#### Forgetting and conjugate-prompt recovery\n\n"
            + markdown.table(columns, body) + "\n")


def recovery_table(rows: list[RecoveryRow]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="forgetting and conjugate-prompt recovery (pp; recovery = forgetting "
                        "on the plain prompt - loss on the conjugate prompt)")
    for name, justify in _RECOVERY_COLUMNS:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(*(escape(c) for c in _recovery_cells(r)))
    return table
