"""Paired comparison of two runs of the same task: statistics rows, Holm, verdicts, flipped items.

A comparison reads finished run folders (see ``docs/run-format.md``), pairs the BASE and TUNED
samples by ``(doc_id, sample_idx)``, and for every metric in ``metrics.json`` reduces each side
to one value per item (the mean over the item's samples, or the unbiased pass@k). Everything
statistical then happens on those paired per-item values (see ``evalkit.stats``):

- Δ = mean(tuned) - mean(base) over the items both sides could score;
- a CI of Δ: Newcombe's (1998) paired score interval when every per-item value is 0/1, else an
  expanded percentile bootstrap that resamples items (seeded, 10,000 resamples by default), and
  none when so few items changed that no test could reach the CI's level (<= 5 at 95%);
- McNemar's exact test when every per-item value is 0/1, else a sign-flip permutation test of
  the mean difference (or Wilcoxon on request);
- Holm's correction over **all rows of the comparison** (every task x metric that has a test):
  the family is "everything this comparison claims", so asking about more tasks or metrics can
  never make a false "regressed" more likely. Holm is valid under any dependence, which matters
  because e.g. GSM8K strict-match and flexible-extract rows are strongly correlated;
- verdict per row: ``improved`` / ``regressed`` when the Holm-adjusted p <= alpha (direction from
  the sign of Δ and the metric's ``higher_is_better``), else ``no significant change``; a row with
  no scorable item is ``untested``.

Runs are refused (``EvalkitError``) when they are unfinished, or not pairable: different task or
task version, different generation settings, different item sets, or different prompts.

The same per-item representation (``TaskScores``) is what a baseline file stores, so a
comparison can be made against a committed baseline without the original run folder.
"""


from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evalkit import stats as st
from evalkit.compare.load import RunData, load_runs
from evalkit.compare.pair import check_pairable, pair_by_task
from evalkit.compare.rng import row_rng
from evalkit.compare.schema import (
    Comparison,
    ComparisonSettings,
    FlippedItem,
    MetricRow,
    MetricScores,
    SampleView,
    TaskPair,
    TestName,
    Verdict,
)
from evalkit.errors import EvalkitError


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def metric_row(task: str, metric: str, base: MetricScores, tuned: MetricScores,
               doc_ids: Sequence[str], settings: ComparisonSettings) -> MetricRow:
    """Compute one row (before the Holm step fills ``p_holm`` and ``verdict``)."""
    pairs = [(d, x, y) for d, x, y in zip(doc_ids, base.values, tuned.values, strict=True)
             if x is not None and y is not None]
    common: dict[str, Any] = {
        "task": task, "metric": metric, "aggregation": base.aggregation, "k": base.k,
        "higher_is_better": base.higher_is_better, "n_excluded": len(doc_ids) - len(pairs)}
    if not pairs:
        return MetricRow(**common, n_items=0, base=None, tuned=None, delta=None)
    docs = [p[0] for p in pairs]
    x = np.array([p[1] for p in pairs], dtype=float)
    y = np.array([p[2] for p in pairs], dtype=float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        bad = next(d for d, u, v in pairs if not (np.isfinite(u) and np.isfinite(v)))
        raise EvalkitError(f"task '{task}' metric '{metric}': doc '{bad}' has a non-finite "
                           "value (NaN or infinity); per-item values must be numbers")
    rng = row_rng(settings.seed, task, metric)
    sign = 1.0 if base.higher_is_better else -1.0
    b = c = None
    low: float | None
    high: float | None
    if st.is_binary(x, y):
        # The percentile bootstrap under-covers 0/1 items at small n (75% at n = 20, p = 0.1);
        # Newcombe's paired interval keeps >= 93% (docs/ci-gate.md, tests/test_stats_coverage).
        low, high = st.paired_binary_ci(x, y, confidence=settings.confidence)
        test: TestName = "mcnemar-exact"
        # b/c follow the metric's direction: "right" is 1 when higher is better.
        b, c = st.discordant_counts(x, y) if sign > 0 else st.discordant_counts(y, x)
        p = st.mcnemar_exact(b, c)
    else:
        low, high = st.paired_bootstrap_ci(x, y, resamples=settings.resamples,
                                           confidence=settings.confidence, seed=rng)
        if not st.sign_tests_can_reach(x, y, 1.0 - settings.confidence):
            # A bootstrap mean never leaves the range of the differences: with 3 items all up,
            # its interval excludes 0 while no test of 3 items can (p >= 2/2**3). No interval
            # then, rather than one that contradicts the verdict.
            low = high = None
        if settings.continuous_test == "wilcoxon":
            test, p = "wilcoxon", st.wilcoxon_signed_rank(x, y)
        else:
            test = "permutation"
            p = st.paired_permutation_test(x, y, resamples=settings.resamples, seed=rng)
    # Worst regressions and best improvements first; ties keep doc order.
    gain = sign * (y - x)
    regressions = [docs[i] for i in np.argsort(gain, kind="stable") if gain[i] < 0]
    improvements = [docs[i] for i in np.argsort(-gain, kind="stable") if gain[i] > 0]
    return MetricRow(
        **common, n_items=len(pairs), base=float(x.mean()), tuned=float(y.mean()),
        delta=float(y.mean() - x.mean()),
        base_stderr=_finite(st.clustered_sem(x)), tuned_stderr=_finite(st.clustered_sem(y)),
        ci_low=low, ci_high=high, test=test, p_value=p, b=b, c=c,
        regressions=regressions, improvements=improvements,
    )


def apply_holm(rows: Sequence[MetricRow], alpha: float) -> None:
    """Fill ``p_holm`` (Holm over all tested rows) and ``verdict`` at ``alpha``, in place."""
    pvals = np.array([r.p_value if r.p_value is not None else np.nan for r in rows], dtype=float)
    adjusted = st.holm(pvals) if len(rows) else np.array([])
    for row, q in zip(rows, adjusted, strict=True):
        row.p_holm = _finite(q)
        row.verdict = verdict(row, alpha)


def verdict(row: MetricRow, alpha: float) -> Verdict:
    """The verdict of a row whose ``p_holm`` is set."""
    if row.p_holm is None or row.delta is None:
        return "untested"
    gain = row.delta if row.higher_is_better else -row.delta
    if row.p_holm <= alpha and gain != 0:  # Holm (1979) and statsmodels reject at <=
        return "improved" if gain > 0 else "regressed"
    return "no significant change"


def _pick_sample(records: dict[int, dict[str, Any]], score_key: str, best: bool
                 ) -> dict[str, Any]:
    # For a regression show a sample where base passed and one where tuned failed (and the
    # reverse for an improvement): with n > 1 that is the contrast a reader needs to see.
    def score(r: dict[str, Any]) -> float:
        s = r["scores"].get(score_key)
        return float(s) if s is not None else (-np.inf if best else np.inf)

    ordered = sorted(records.items())
    pick = (max if best else min)(ordered, key=lambda kv: score(kv[1]))
    return pick[1]


def _sample_view(record: dict[str, Any], n_samples: int) -> SampleView:
    execution = record.get("execution")
    status = execution.get("status") if isinstance(execution, dict) else None
    extracted = record.get("extracted")
    return SampleView(
        sample_idx=int(record["sample_idx"]), completion=str(record.get("completion") or ""),
        extracted=extracted if isinstance(extracted, dict) else None,
        scores=dict(record.get("scores") or {}), execution_status=status,
        finish_reason=record.get("finish_reason"), n_samples=n_samples,
    )


def flipped_items(base: RunData, tuned: RunData, rows: Sequence[MetricRow]) -> list[FlippedItem]:
    """Every item that regressed or improved on some metric, regressions first."""
    items: dict[str, FlippedItem] = {}
    metric_specs = base.scores.metrics
    index = {d: i for i, d in enumerate(base.scores.doc_ids)}
    tuned_index = {d: i for i, d in enumerate(tuned.scores.doc_ids)}
    ordered = [(r, d, "regression") for r in rows for d in r.regressions]
    ordered += [(r, d, "improvement") for r in rows for d in r.improvements]
    for row, doc, direction in ordered:
        spec = metric_specs[row.metric]
        value = (spec.values[index[doc]],
                 tuned.scores.metrics[row.metric].values[tuned_index[doc]])
        item = items.get(doc)
        if item is None:
            item = FlippedItem(doc_id=doc, flips={}, values={})
            regressed = direction == "regression"
            # "best" on the side that was better, "worst" on the side that was worse.
            base_best = regressed == spec.higher_is_better
            for side, run, best in (("base", base, base_best), ("tuned", tuned, not base_best)):
                if run.samples is None or doc not in run.samples:
                    continue
                record = _pick_sample(run.samples[doc], spec.score_key, best)
                setattr(item, side, _sample_view(record, len(run.samples[doc])))
                item.target = record.get("target", item.target)
                item.prompt = record.get("prompt", item.prompt)
            items[doc] = item
        item.flips.setdefault(row.metric, direction)  # type: ignore[arg-type]
        assert value[0] is not None and value[1] is not None  # rows list scored items only
        item.values[row.metric] = (float(value[0]), float(value[1]))
    return list(items.values())


def check_stats_options(*, alpha: float = 0.05, confidence: float = 0.95,
                        resamples: int = st.DEFAULT_RESAMPLES, **_: Any) -> None:
    """Refuse unusable statistics settings (before any generation is spent on them)."""
    if not 0 < alpha < 1:
        raise EvalkitError(f"--alpha must be between 0 and 1, got {alpha}")
    if not 0 < confidence < 1:
        raise EvalkitError(f"--confidence must be between 0 and 1, got {confidence}")
    if resamples < 1_000:
        raise EvalkitError(f"--resamples must be at least 1000, got {resamples}")


def _tampered(run: RunData) -> int:
    return sum((record.get("execution") or {}).get("status") == "tampered"
               for by_index in (run.samples or {}).values() for record in by_index.values())


def _tampered_note(run: RunData, label: str) -> str:
    """Programs the sandbox caught reaching outside themselves (scored as failed): listed per
    task and side, since for an RL-tuned model they are reward hacking, not just wrong code."""
    total = sum(len(by_index) for by_index in (run.samples or {}).values())
    return (f"{run.task}: {_tampered(run)} of {total} {label} samples tampered with the sandbox "
            "(scored as failed; evidence in their run's samples.jsonl)")


def compare_runs(pairs: Sequence[tuple[RunData, RunData]], *, alpha: float = 0.05,
                 confidence: float = 0.95, resamples: int = st.DEFAULT_RESAMPLES, seed: int = 0,
                 continuous_test: st.ContinuousTest = "permutation",
                 notes: Sequence[str] = (), labels: tuple[str, str] = ("base", "tuned")
                 ) -> Comparison:
    """Compare several (base run, tuned run) pairs, one per task, into one ``Comparison``.

    ``labels`` name the two sides in error messages.
    """
    if not pairs:
        raise EvalkitError("nothing to compare: no (base, tuned) run pairs")
    check_stats_options(alpha=alpha, confidence=confidence, resamples=resamples)
    settings = ComparisonSettings(alpha=alpha, confidence=confidence, resamples=resamples,
                                  seed=seed, continuous_test=continuous_test)
    all_notes = list(notes)
    rows: list[MetricRow] = []
    task_rows: list[tuple[RunData, RunData, list[MetricRow]]] = []
    for base, tuned in pairs:
        check_pairable(base, tuned, labels)
        all_notes += [*base.notes, *[n for n in tuned.notes if n not in base.notes]]
        all_notes += [_tampered_note(run, label)
                      for run, label in zip((base, tuned), labels, strict=True) if _tampered(run)]
        tuned_pos = {d: i for i, d in enumerate(tuned.scores.doc_ids)}
        these = []
        for name, mb in base.scores.metrics.items():
            mt = tuned.scores.metrics[name]
            # Put the tuned values in base doc order so the pairs line up.
            aligned = mt.model_copy(update={
                "values": [mt.values[tuned_pos[d]] for d in base.scores.doc_ids]})
            these.append(metric_row(base.task, name, mb, aligned, base.scores.doc_ids, settings))
        rows += these
        task_rows.append((base, tuned, these))
    apply_holm(rows, alpha)
    tasks = [TaskPair(task=b.task, base=b.scores, tuned=t.scores,
                      flipped=flipped_items(b, t, these)) for b, t, these in task_rows]
    first_base, first_tuned = pairs[0]
    comparison = Comparison(base_label=first_base.scores.checkpoint.label,
                            tuned_label=first_tuned.scores.checkpoint.label, settings=settings,
                            rows=rows, tasks=tasks, notes=all_notes)
    from evalkit.compare.recovery import recovery

    comparison.recovery = recovery(comparison)
    return comparison


def compare_paths(base: str | Path, tuned: str | Path, tasks: Sequence[str] | None = None,
                  **options: Any) -> Comparison:
    """Compare two run folders (or two folders of run folders, paired by task name)."""
    pairs, notes = pair_by_task(load_runs(base, comparison_side="base"),
                                load_runs(tuned, comparison_side="tuned"), tasks)
    return compare_runs(pairs, notes=notes, **options)
