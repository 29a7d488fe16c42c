"""Output of a comparison: comparison.json, the rich terminal table and the Markdown summary."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit import markdown
from evalkit import stats as st
from evalkit.compare.schema import Comparison, FlippedItem, MetricRow, SampleView
from evalkit.markdown import Code

if TYPE_CHECKING:
    from rich.table import Table

def write_comparison(comparison: Comparison, out: str | Path) -> tuple[Path, Path]:
    """Write ``comparison.json`` and ``comparison.md`` into ``out``; returns both paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "comparison.json", folder / "comparison.md"
    json_path.write_text(comparison.model_dump_json(indent=1) + "\n", encoding="utf-8")
    md_path.write_text(comparison_markdown(comparison), encoding="utf-8")
    return json_path, md_path


# Metrics that are not proportions (lm-eval's perplexity family): tables show them in their own
# units; every other metric is a rate in [0, 1], shown in % with differences in points.
_RAW_UNIT_METRICS = frozenset({"bits_per_byte", "byte_perplexity", "word_perplexity",
                               "perplexity"})


def is_rate(metric: str) -> bool:
    return metric.split(",")[0] not in _RAW_UNIT_METRICS


def value_text(metric: str, value: float | None) -> str:
    """A metric's value for a table: ``31.6%`` for rates, ``0.931`` otherwise."""
    if value is None:
        return "—"
    return f"{100 * value:.1f}%" if is_rate(metric) else f"{value:.4g}"


def delta_text(metric: str, value: float | None) -> str:
    """A difference: ``+7.0 pp`` for rates, ``+0.071`` in the metric's units otherwise."""
    if value is None:
        return "—"
    return f"{100 * value:+.1f} pp" if is_rate(metric) else f"{value:+.3g}"


def fmt_p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3g}"


def ci_text(row: MetricRow) -> str:
    if row.ci_low is None or row.ci_high is None:
        return "—"
    if not is_rate(row.metric):
        return f"[{row.ci_low:+.3g}, {row.ci_high:+.3g}]"
    return f"[{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}] pp"


def _test_text(row: MetricRow) -> str:
    if row.test == "mcnemar-exact":
        return f"McNemar b={row.b} c={row.c}"
    return row.test


_VERDICT_STYLE = {"improved": "bold green", "regressed": "bold red",
                  "no significant change": "dim", "untested": "yellow"}
_VERDICT_MARK = {"improved": "✅ improved", "regressed": "❌ regressed",
                 "no significant change": "no significant change", "untested": "⚠️ untested"}


def settings_line(comparison: Comparison) -> str:
    s = comparison.settings
    tested = sum(r.p_value is not None for r in comparison.rows)
    few = any(r.p_value is not None and r.ci_low is None for r in comparison.rows)
    too_few = (f" (none where fewer than {st.fewest_changes_to_reject(1 - s.confidence)} items "
               "changed: no test of so few items could reach that level)") if few else ""
    return (f"Δ and CI in percentage points (perplexity-type metrics in their own units); "
            f"{round(100 * s.confidence)}% CI: Newcombe's paired interval for 0/1 items, else "
            f"paired bootstrap over items ({s.resamples:,} resamples, seed {s.seed}){too_few}; "
            f"verdicts at α = {s.alpha} with Holm's correction across all {tested} tested rows.")


# The summary table's columns: (name, justification). The Markdown table shows the Holm p only.
_COLUMNS = [("task", "left"), ("metric", "left"), ("n", "right"), ("base", "right"),
            ("tuned", "right"), ("Δ", "right"), ("95% CI", "right"), ("test", "left"),
            ("p", "right"), ("p Holm", "right"), ("verdict", "left")]
_MARKDOWN_NAMES = {"p Holm": "p (Holm)"}


def row_cells(row: MetricRow, tuco: dict[str, dict[str, float]] | None = None
              ) -> dict[str, str]:
    """A row's cells as plain text, by column: what both the terminal and Markdown tables show."""
    cells = {"task": row.task, "metric": row.metric, "n": str(row.n_items),
             "base": value_text(row.metric, row.base),
             "tuned": value_text(row.metric, row.tuned),
             "Δ": delta_text(row.metric, row.delta), "95% CI": ci_text(row),
             "test": _test_text(row), "p": fmt_p(row.p_value), "p Holm": fmt_p(row.p_holm),
             "verdict": row.verdict}
    if tuco:
        cells["TuCo"] = _tuco_cell(tuco, row.task)
    return cells


def comparison_table(comparison: Comparison, title: str | None = None) -> Table:
    """The terminal summary table (rich); names are escaped, never read as rich markup."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title or f"{comparison.base_label} → {comparison.tuned_label}"),
                  caption=settings_line(comparison), caption_justify="left")
    columns = _COLUMNS + ([("TuCo", "right")] if comparison.tuco else [])
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in comparison.rows:
        cells = {k: escape(v) for k, v in row_cells(row, comparison.tuco).items()}
        cells["verdict"] = f"[{_VERDICT_STYLE[row.verdict]}]{cells['verdict']}[/]"
        table.add_row(*(cells[name] for name, _ in columns))
    return table


def _tuco_cell(tuco: dict[str, dict[str, float]], task: str) -> str:
    value = tuco.get(task)
    return f"{value['mean']:.3f}" if value else "—"


def markdown_table(rows: Sequence[MetricRow], tuco: dict[str, dict[str, float]] | None = None
                   ) -> str:
    columns = [c for c in _COLUMNS if c[0] != "p"] + ([("TuCo", "right")] if tuco else [])
    body = []
    for r in rows:
        cells: dict[str, Any] = row_cells(r, tuco)
        cells["metric"], cells["verdict"] = Code(r.metric), _VERDICT_MARK[r.verdict]
        body.append([cells[name] for name, _ in columns])
    return markdown.table([(_MARKDOWN_NAMES.get(n, n), j) for n, j in columns], body)


def _clip(text: str, max_lines: int = 30, max_chars: int = 1_500) -> str:
    text = text.rstrip()
    lines = text.splitlines()
    clipped = "\n".join(lines[:max_lines])[:max_chars]
    hidden = len(text) - len(clipped)
    return clipped + (f"\n… ({hidden} more characters)" if hidden > 0 else "")


def _side_header(side: str, view: SampleView | None) -> str:
    if view is None:
        return f"{side} (completion not stored)"
    bits = []
    if view.extracted:
        bits += [f"{k}: {v}" for k, v in view.extracted.items()]
    if view.execution_status:
        bits.append(f"execution: {view.execution_status}")
    if view.n_samples > 1:
        bits.append(f"sample {view.sample_idx} of {view.n_samples}")
    return side + (" · " + " · ".join(bits) if bits else "")


def flipped_item_markdown(item: FlippedItem) -> str:
    """One flipped item: what changed, then both completions side by side (an HTML table)."""
    changes = ", ".join(f"`{m}` {value_text(m, v[0])} → {value_text(m, v[1])}"
                        for m, v in item.values.items())
    kind = "regression" if "regression" in item.flips.values() else "improvement"
    target = "" if item.target is None else f" · target `{_clip(str(item.target), 1, 80)}`"
    cells = []
    for side in ("base", "tuned"):
        view: SampleView | None = getattr(item, side)
        body = html.escape(_clip(view.completion)) if view else "—"
        cells.append((html.escape(_side_header(side, view)), body))
    return (f"**{kind} · doc `{item.doc_id}`** — {changes}{target}\n\n"
            f"<table><tr><th>{cells[0][0]}</th><th>{cells[1][0]}</th></tr>\n"
            f"<tr><td><pre>{cells[0][1]}</pre></td><td><pre>{cells[1][1]}</pre></td></tr>"
            "</table>\n")


def _details(comparison: Comparison, per_kind: int) -> str:
    blocks = []
    for task in comparison.tasks:
        regs = [i for i in task.flipped if "regression" in i.flips.values()]
        imps = [i for i in task.flipped if "regression" not in i.flips.values()]
        if not task.flipped or per_kind == 0:
            if task.flipped:
                blocks.append(f"- **{task.task}**: {len(regs)} regressed items, {len(imps)} "
                              "improved items (see comparison.json)\n")
            continue
        shown = regs[:per_kind] + imps[:per_kind]
        summary = (f"<b>{html.escape(task.task)}</b>: {len(regs)} regressed items, {len(imps)} "
                   f"improved items (showing {min(len(regs), per_kind)} and "
                   f"{min(len(imps), per_kind)})")
        body = "\n".join(flipped_item_markdown(i) for i in shown)
        blocks.append(f"<details><summary>{summary}</summary>\n\n{body}\n</details>\n")
    return "\n".join(blocks)


def comparison_markdown(comparison: Comparison, *, max_items: int = 10,
                        max_chars: int = 60_000) -> str:
    """A PR-comment-sized summary: the table, then the flipped items collapsed in <details>.

    GitHub caps a comment at 65,536 characters; the item lists shrink until the text fits.
    """
    counts = comparison.summary()
    head = [f"### evalkit compare: `{comparison.base_label}` → `{comparison.tuned_label}`", "",
            f"{counts['regressed']} regressed · {counts['improved']} improved · "
            f"{counts['no significant change']} no significant change"
            + (f" · {counts['untested']} untested" if counts["untested"] else ""), "",
            markdown_table(comparison.rows, comparison.tuco), "",
            f"<sub>{settings_line(comparison)}</sub>", ""]
    if comparison.recovery:
        from evalkit.compare.recovery import recovery_markdown

        head += [recovery_markdown(comparison.recovery)]
    head += [f"> note: {n}" for n in comparison.notes]
    text = "\n".join(head)
    per_kind = max_items
    while True:
        full = text + "\n" + _details(comparison, per_kind)
        if len(full) <= max_chars or per_kind == 0:
            return full
        per_kind //= 2
