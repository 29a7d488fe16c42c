"""The CI regression gate behind ``evalkit check``.

A candidate (a run folder, a folder of run folders, or a ``comparison.json``) is compared with a
baseline (the same kinds, or a baseline file written by ``write_baseline``) using exactly the
paired statistics of ``evalkit compare``. A row FAILS only when both hold:

- the metric got worse by more than ``max_drop`` percentage points (``max_drop=1.0`` means 0.01
  on a 0–1 metric such as accuracy or pass@1; "worse" follows ``higher_is_better``), and
- the change is significant: Holm-adjusted p (over all rows of the gate) <= ``alpha``.

The drop is decided exactly: for 0/1 metrics as the rational ``100 (b - c) / n`` against the
tolerance as written, otherwise with a 1e-9 pp allowance for float round-off
(``stats.drop_exceeds``), so a drop equal to the tolerance is tolerated.

Exit codes: 0 = no failing row, 1 = at least one failing row, 2 = the gate could not decide (a
malformed, missing or mismatched baseline, or a metric with no scorable item). A broken gate
never reads as a regression, and never as a pass.
"""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from evalkit import stats as st
from evalkit.compare.load import (
    RunData,
    load_comparison,
    load_runs,
    refuse_duplicate_tasks,
)
from evalkit.compare.pair import pair_by_task
from evalkit.compare.render import ci_text, delta_text, fmt_p, value_text
from evalkit.compare.rows import compare_runs, verdict
from evalkit.compare.schema import Baseline, Comparison, FlippedItem, MetricRow
from evalkit.errors import EvalkitError
from evalkit.run.format import read_json

if TYPE_CHECKING:
    from rich.table import Table

PathLike = str | Path
Status = Literal["pass", "fail", "untested"]


class GateRow(BaseModel):
    row: MetricRow
    drop_pp: float | None  # positive = worse than the baseline, in percentage points
    status: Status
    message: str


class GateResult(BaseModel):
    max_drop: float
    alpha: float
    rows: list[GateRow]
    comparison: Comparison
    seconds: float = 0.0

    @property
    def failed(self) -> list[GateRow]:
        return [r for r in self.rows if r.status == "fail"]

    @property
    def untested(self) -> list[GateRow]:
        return [r for r in self.rows if r.status == "untested"]

    @property
    def exit_code(self) -> int:
        if self.failed:
            return 1
        return 2 if self.untested else 0


# --------------------------------------------------------------------------------------------
# Baseline files
# --------------------------------------------------------------------------------------------


def _load_many(sources: PathLike | Sequence[PathLike], side: Literal["base", "tuned"]
               ) -> list[RunData]:
    paths = [sources] if isinstance(sources, str | Path) else list(sources)
    if not paths:
        raise EvalkitError("no runs given")
    return [run for p in paths for run in load_runs(p, comparison_side=side)]


def baseline_from_runs(source: PathLike | Sequence[PathLike]) -> Baseline:
    """A baseline holding the per-item values of every task in ``source``.

    ``source`` is one or more run folders, folders of run folders, baseline files or
    comparison.json files (their tuned side: "the tuned model is the new reference").
    """
    runs = _load_many(source, "tuned")
    refuse_duplicate_tasks(runs, "the baseline sources")
    return Baseline(tasks=[r.scores for r in runs])


def write_baseline(source: PathLike | Sequence[PathLike], path: PathLike) -> Path:
    """Write ``results/baseline-*.json`` (or any path) from runs; returns the path."""
    target = Path(path)
    baseline = baseline_from_runs(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(baseline.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return target


# --------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------


def _worst_items(row: MetricRow, limit: int = 5) -> str:
    shown = ", ".join(row.regressions[:limit])
    more = len(row.regressions) - limit
    return shown + (f" (+{more} more)" if more > 0 else "")


def _eq(p: float | None) -> str:
    text = fmt_p(p)
    return text if text.startswith("<") else f"={text}"


def gate_row(row: MetricRow, max_drop: float) -> GateRow:
    """Decide one row. ``row.verdict`` must already be set (Holm applied)."""
    name = f"{row.task} {row.metric}"
    if row.verdict == "untested" or row.delta is None:
        return GateRow(row=row, drop_pp=None, status="untested",
                       message=f"{name}: no item could be scored on both sides "
                               f"({row.n_excluded} excluded); the gate cannot decide")
    drop = 100.0 * (-row.delta if row.higher_is_better else row.delta)
    numbers = (f"{value_text(row.metric, row.base)} → {value_text(row.metric, row.tuned)} "
               f"(Δ {delta_text(row.metric, row.delta)}, 95% CI {ci_text(row)}; {row.test}"
               + (f" b={row.b} c={row.c}" if row.b is not None else "")
               + f", p{_eq(row.p_value)}, Holm p{_eq(row.p_holm)}; n={row.n_items})")
    beyond = st.drop_exceeds(drop, max_drop, b=row.b, c=row.c, n=row.n_items)
    if row.verdict == "regressed" and beyond:
        message = (f"{name} dropped {drop:.1f} pp, more than the {max_drop:g} pp tolerance, and "
                   f"significantly: {numbers}")
        if row.regressions:
            message += f"; worst flipped items: {_worst_items(row)}"
        return GateRow(row=row, drop_pp=drop, status="fail", message=message)
    if row.verdict == "regressed":
        why = f"dropped {drop:.1f} pp, within the {max_drop:g} pp tolerance"
    else:
        why = row.verdict
    return GateRow(row=row, drop_pp=drop, status="pass", message=f"{name}: {why}: {numbers}")


def gate_comparison(comparison: Comparison, *, max_drop: float = 1.0, alpha: float = 0.05
                    ) -> GateResult:
    """Gate an existing comparison (base = baseline, tuned = candidate) at ``alpha``."""
    _check_options(max_drop, alpha)
    rows = [row.model_copy(deep=True) for row in comparison.rows]
    for row in rows:  # Holm-adjusted p does not depend on alpha; only the verdict does
        row.verdict = verdict(row, alpha)
    comparison = comparison.model_copy(update={"rows": rows})
    return GateResult(max_drop=max_drop, alpha=alpha, comparison=comparison,
                      rows=[gate_row(r, max_drop) for r in rows])


def _check_options(max_drop: float, alpha: float) -> None:
    if not max_drop >= 0:
        raise EvalkitError(f"--max-drop must be >= 0 percentage points, got {max_drop}")
    if not 0 < alpha < 1:
        raise EvalkitError(f"--alpha must be between 0 and 1, got {alpha}")


def run_gate(candidate: PathLike | Sequence[PathLike], baseline: PathLike | None = None, *,
             max_drop: float = 1.0, alpha: float = 0.05, tasks: Sequence[str] | None = None,
             seed: int = 0, resamples: int = st.DEFAULT_RESAMPLES) -> GateResult:
    """Compare ``candidate`` with ``baseline`` and decide pass / fail / cannot-decide.

    Without ``baseline``, ``candidate`` must be a comparison.json, which is gated as it stands
    (its base is the baseline). Every baseline task must be present in the candidate.
    """
    _check_options(max_drop, alpha)
    started = time.perf_counter()
    if baseline is None:
        single = candidate if isinstance(candidate, str | Path) else None
        if single is None or not _is_comparison(Path(single)):
            raise EvalkitError("--baseline is required unless CANDIDATE is a comparison.json")
        result = gate_comparison(load_comparison(single), max_drop=max_drop, alpha=alpha)
    else:
        base_runs = load_runs(baseline, comparison_side="tuned")
        labels = ("baseline", "candidate")
        pairs, notes = pair_by_task(base_runs, _load_many(candidate, "tuned"), tasks,
                                    require_all_base=True, labels=labels)
        comparison = compare_runs(pairs, alpha=alpha, seed=seed, resamples=resamples,
                                  notes=notes, labels=labels)
        result = GateResult(max_drop=max_drop, alpha=alpha, comparison=comparison,
                            rows=[gate_row(r, max_drop) for r in comparison.rows])
    result.seconds = time.perf_counter() - started
    return result


def _is_comparison(path: Path) -> bool:
    if path.is_dir():
        return (path / "comparison.json").exists() and not (path / "run.json").exists()
    if path.suffix != ".json" or path.name == "run.json" or not path.exists():
        return False
    raw = read_json(path)
    return isinstance(raw, dict) and raw.get("kind") == "evalkit.comparison"


def summary_text(result: GateResult) -> str:
    """One paragraph for logs and AssertionError messages."""
    lines = [f"evalkit check: {len(result.failed)} of {len(result.rows)} metric(s) regressed "
             f"beyond {result.max_drop:g} pp at alpha={result.alpha} (Holm)"]
    lines += [f"  FAIL {r.message}" for r in result.failed]
    lines += [f"  UNTESTED {r.message}" for r in result.untested]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Output: table, JUnit XML, Markdown
# --------------------------------------------------------------------------------------------

_STATUS_STYLE = {"pass": "[green]PASS[/]", "fail": "[bold red]FAIL[/]",
                 "untested": "[yellow]UNTESTED[/]"}


def gate_table(result: GateResult) -> Table:
    from rich.table import Table

    table = Table(title=f"evalkit check (max drop {result.max_drop:g} pp, α = {result.alpha}, "
                        "Holm)")
    for name, justify in (("task", "left"), ("metric", "left"), ("n", "right"),
                          ("baseline", "right"), ("candidate", "right"), ("Δ", "right"),
                          ("95% CI", "right"), ("p Holm", "right"), ("regressed items", "left"),
                          ("status", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for g in result.rows:
        r = g.row
        table.add_row(r.task, r.metric, str(r.n_items), value_text(r.metric, r.base),
                      value_text(r.metric, r.tuned), delta_text(r.metric, r.delta), ci_text(r),
                      fmt_p(r.p_holm), _worst_items(r, 3) or "—",
                      _STATUS_STYLE[g.status])
    return table


def _item_lines(item: FlippedItem) -> str:
    def side(attr: str, name: str) -> str:
        view = getattr(item, attr)
        if view is None:
            return f"    {name}: (completion not stored)"
        facts = [f"{k}={v}" for k, v in (view.extracted or {}).items()]
        if view.execution_status:
            facts.append(f"execution={view.execution_status}")
        head = view.completion.strip().splitlines()[:6]
        body = "\n".join(f"      | {line}" for line in head)
        return f"    {name}: {' '.join(facts)}\n{body}"

    return f"  doc {item.doc_id}:\n{side('base', 'baseline')}\n{side('tuned', 'candidate')}"


def _failure_body(g: GateRow, result: GateResult, limit: int = 10) -> str:
    task = next(t for t in result.comparison.tasks if t.task == g.row.task)
    by_doc = {i.doc_id: i for i in task.flipped}
    lines = [g.message, "", f"worst flipped items (baseline → candidate), {limit} at most:"]
    lines += [_item_lines(by_doc[d]) for d in g.row.regressions[:limit] if d in by_doc]
    return "\n".join(lines)


def _suite(name: str, cases: int, failures: int, errors: int, skipped: int, seconds: float
           ) -> tuple[ET.Element, ET.Element]:
    attrs = {"name": name, "tests": str(cases), "failures": str(failures),
             "errors": str(errors), "skipped": str(skipped), "time": f"{seconds:.3f}"}
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(root, "testsuite", {
        **attrs, "id": "0", "package": "evalkit",
        "timestamp": datetime.now().strftime("%Y-%m-%dT%H:%M:%S"),
        "hostname": socket.gethostname() or "localhost"})
    return root, suite


def _xml_text(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def junit_xml(result: GateResult) -> str:
    """JUnit XML: one testcase per task x metric; failures carry numbers and flipped items.

    Untested rows are reported as ``<error>`` (the gate could not decide), not as failures.
    """
    root, suite = _suite("evalkit check", len(result.rows), len(result.failed),
                         len(result.untested), 0, result.seconds)
    props = ET.SubElement(suite, "properties")
    for key, value in (("max_drop_pp", f"{result.max_drop:g}"), ("alpha", str(result.alpha)),
                       ("correction", "holm"), ("baseline", result.comparison.base_label),
                       ("candidate", result.comparison.tuned_label)):
        ET.SubElement(props, "property", {"name": key, "value": value})
    per_case = result.seconds / max(1, len(result.rows))
    for g in result.rows:
        case = ET.SubElement(suite, "testcase", {"name": g.row.metric,
                                                 "classname": f"evalkit.{g.row.task}",
                                                 "time": f"{per_case:.3f}"})
        if g.status == "fail":
            failure = ET.SubElement(case, "failure", {"message": g.message, "type": "regression"})
            failure.text = _failure_body(g, result)
        elif g.status == "untested":
            error = ET.SubElement(case, "error", {"message": g.message, "type": "untested"})
            error.text = g.message
        else:
            ET.SubElement(case, "system-out").text = g.message
    ET.SubElement(suite, "system-out").text = summary_text(result)
    ET.SubElement(suite, "system-err").text = ""
    return _xml_text(root)


def junit_error_xml(message: str) -> str:
    """JUnit XML for a gate that could not run at all (bad baseline, bad candidate)."""
    root, suite = _suite("evalkit check", 1, 0, 1, 0, 0.0)
    ET.SubElement(suite, "properties")
    case = ET.SubElement(suite, "testcase", {"name": "load baseline and candidate",
                                             "classname": "evalkit.check", "time": "0.000"})
    error = ET.SubElement(case, "error", {"message": message, "type": "EvalkitError"})
    error.text = message
    ET.SubElement(suite, "system-out").text = ""
    ET.SubElement(suite, "system-err").text = message
    return _xml_text(root)


def write_junit(result: GateResult | str, path: PathLike) -> Path:
    """Write the JUnit file for a result, or for an error message (a gate that broke)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = junit_error_xml(result) if isinstance(result, str) else junit_xml(result)
    target.write_text(text, encoding="utf-8")
    return target


def gate_markdown(result: GateResult) -> str:
    """Markdown for a PR comment: the verdict line, then the comparison's table and items."""
    from evalkit.compare.render import comparison_markdown

    if result.failed:
        head = f"**evalkit check: ❌ {len(result.failed)} regression(s) beyond " \
               f"{result.max_drop:g} pp**"
    elif result.untested:
        head = "**evalkit check: ⚠️ could not decide (untested metrics)**"
    else:
        head = "**evalkit check: ✅ no significant regression beyond " \
               f"{result.max_drop:g} pp**"
    bullets = [f"- {g.message}" for g in result.failed + result.untested]
    return "\n".join([head, "", *bullets, "", comparison_markdown(result.comparison)])
