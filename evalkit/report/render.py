"""Turn collected inputs into ``report/index.html`` (one self-contained file) and
``report/report.md`` (fits a GitHub PR comment).

Why jinja2 + matplotlib SVG and a few lines of hand-written JavaScript rather than Vega-Lite: the
page must open from ``file://`` with no network, and the only interactivity needed (sort a
table, filter and page through flipped items) is small; inlining vega + vega-lite + vega-embed
would add ~1 MB of vendored JS to every report. Plots are static SVG written by matplotlib.

Everything that comes from a model, a prompt, a target or a sandbox is untrusted. The HTML is
rendered with autoescape on, and the flipped items travel as gzip+base64 JSON that the page's
script decodes and inserts with ``textContent`` only, so no markup, template syntax or
``</script>`` inside them can act.
"""
# size: the two renderings of the same views (the HTML page and the Markdown summary) and the
# view builders they share; split apart, each half would import the other's helpers back.

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalkit import __version__
from evalkit.markdown import cell, table_lines
from evalkit.report import plots
from evalkit.report.collect import Compare, Inputs
from evalkit.report.store import RunRecord

MD_LIMIT = 65_536  # GitHub's limit for a comment body
MAX_TEXT = 4_000  # characters kept of one prompt / completion / stderr in the page
FAMILIES = ("code", "math", "critique", "forgetting", "knowledge", "other")
# Characters that reorder or hide text (bidi overrides, zero-width) and terminal escapes: shown
# as visible escapes so a completion cannot disguise what it says.
_HIDDEN = re.compile("[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e"
                     "\u2066-\u2069\ufeff]")


def family(task: str) -> str:
    name = task.lower()
    if name.startswith("finetunebench"):
        return "knowledge"
    if name.startswith("critique"):
        return "critique"
    if name.startswith(("humaneval", "mbpp")) or "code" in name:
        return "code"
    if name.startswith(("gsm8k", "math")):
        return "math"
    if name.startswith(("mmlu", "arc", "wikitext", "forgetting")):
        return "forgetting"
    return "other"


def visible(text: Any, limit: int = MAX_TEXT) -> str:
    """Untrusted text made safe to *look at*: control, bidi and zero-width characters shown as
    ``\\u….`` escapes, clipped with a count (never silently)."""
    if text is None:
        return ""
    if not isinstance(text, str):
        text = json.dumps(text, ensure_ascii=False)
    if len(text) <= limit and not _HIDDEN.search(text):
        return text
    text = _HIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    if len(text) > limit:
        text = text[:limit] + f"\n… [{len(text) - limit} more characters not shown]"
    return text


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "–" if x is None else format(x, spec)


# --------------------------------------------------------------------------------------------
# Leaderboard
# --------------------------------------------------------------------------------------------


@dataclass
class BoardRow:
    checkpoint: str
    fingerprint: str
    base: str | None  # label of the base this row is grouped under
    group: str
    task: str
    family: str
    metric: str
    value: float | None
    stderr: float | None
    n: int | None
    delta: float | None = None
    ci: str = ""
    verdict: str = ""
    record: RunRecord | None = None


def leaderboard(inputs: Inputs) -> list[BoardRow]:
    """One row per checkpoint × task × metric; tuned checkpoints right under their base."""
    runs = inputs.runs
    labels = {r.checkpoint.fingerprint: r.checkpoint.label for r in runs}
    base_of: dict[str, str] = {}
    for r in runs:
        fp = r.checkpoint.fingerprint or ""
        parent = ((r.lineage.base_fingerprint if r.lineage else None)
                  or r.checkpoint.base_fingerprint)
        if parent:
            base_of[fp] = parent
    paired: dict[tuple[str, str, str, str], Any] = {}
    for c in inputs.comparison_records:
        for row in c.rows:
            key = (c.base.fingerprint or "", c.tuned.fingerprint or "", row.task, row.metric)
            paired[key] = row
            base_of.setdefault(c.tuned.fingerprint or "", c.base.fingerprint or "")
            labels.setdefault(c.base.fingerprint, c.base.label)
    rows = []
    for r in runs:
        fp = r.checkpoint.fingerprint or ""
        parent = base_of.get(fp)
        for metric, m in r.metrics.items():
            row = BoardRow(checkpoint=r.checkpoint.label, fingerprint=fp,
                           base=labels.get(parent, (parent or "")[:12]) if parent else None,
                           group=parent or fp, task=r.task.name, family=family(r.task.name),
                           metric=metric, value=m.value, stderr=m.stderr, n=m.n, record=r)
            p = paired.get((parent or "", fp, r.task.name, metric))
            if p is not None:
                row.delta = p.delta
                row.ci = (f"[{_fmt(p.ci_low)}, {_fmt(p.ci_high)}]"
                          if p.ci_low is not None and p.ci_high is not None else "")
                row.verdict = p.verdict
            rows.append(row)
    # Group: each base, then what was tuned from it; inside, by task and metric.
    rows.sort(key=lambda b: (labels.get(b.group, b.group), b.base is not None, b.checkpoint,
                             b.task, b.metric))
    return rows


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------


def _flip_payload(compare: Compare, max_per_task: int) -> tuple[str, dict[str, int]]:
    """The flip explorer's data: gzip+base64 JSON (compact, and inert inside the HTML)."""
    per_task: dict[str, int] = defaultdict(int)
    left: dict[str, int] = defaultdict(int)
    items = []
    for flip in compare.flips:
        per_task[flip.task] += 1
        if per_task[flip.task] > max_per_task:
            left[flip.task] += 1
            continue
        it = flip.item
        directions = sorted(set(it.flips.values()))
        items.append({
            "task": flip.task, "doc": visible(it.doc_id, 200),
            "dir": directions[0] if len(directions) == 1 else "mixed",
            "metrics": {m: [d, *it.values.get(m, (None, None))] for m, d in it.flips.items()},
            "prompt": visible(it.prompt), "target": visible(it.target),
            "base": _side(it.base, flip.base_stderr), "tuned": _side(it.tuned, flip.tuned_stderr),
        })
    raw = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, 6)).decode("ascii"), dict(left)


def _side(view: Any, stderr: str | None) -> dict[str, Any] | None:
    if view is None:
        return None
    return {"completion": visible(view.completion), "status": visible(view.execution_status, 200),
            "stderr": visible(stderr), "finish": visible(view.finish_reason, 50),
            "extracted": visible(view.extracted, 500), "n": view.n_samples}


# The HTML verdict row's fields, by the column of ``row_cells`` they show.
_HTML_CELLS = {"task": "task", "metric": "metric", "n": "n", "base": "base", "tuned": "tuned",
               "delta": "Δ", "ci": "95% CI", "test": "test", "p_holm": "p Holm",
               "verdict": "verdict"}


def comparison_view(index: int, compare: Compare, max_flips: int) -> dict[str, Any]:
    from evalkit.compare.render import row_cells

    comp = compare.comparison
    # The cells are the terminal and Markdown tables' (one formatter); the template escapes them.
    rows = [{**{field: cells[column] for field, column in _HTML_CELLS.items()},
             "family": family(r.task), "flips": f"{len(r.regressions)}↓ {len(r.improvements)}↑"}
            for r in comp.rows for cells in [row_cells(r)]]
    forest_rows = [{"label": f"{r.task} · {r.metric}", "delta": r.delta, "ci_low": r.ci_low,
                    "ci_high": r.ci_high, "verdict": r.verdict} for r in comp.rows]
    payload, left = _flip_payload(compare, max_flips)
    ftb = defaultdict(list)
    for r in rows:
        if r["family"] == "knowledge":
            kind = ("memorization" if "memorization" in r["task"] else
                    "generalization" if "generalization" in r["task"] else "other")
            ftb[kind].append(r)
    return {
        "id": f"cmp{index}", "title": f"{comp.base_label} → {comp.tuned_label}",
        "base": comp.base_label, "tuned": comp.tuned_label, "path": str(compare.path),
        "settings": comp.settings.model_dump(), "summary": comp.summary(), "rows": rows,
        "forest": plots.forest(forest_rows, f"cmp{index}-forest") if forest_rows else "",
        "n_forest": sum(1 for r in comp.rows if r.delta is not None),
        "forgetting": [r for r in rows if r["family"] == "forgetting"],
        "recovery": [r.model_dump() for r in comp.recovery],
        "finetunebench": dict(ftb), "tuco": comp.tuco,
        "notes": comp.notes, "flips": payload, "n_flips": len(compare.flips),
        "flips_left": left, "tasks": sorted({f.task for f in compare.flips}),
    }


# --------------------------------------------------------------------------------------------
# Weight space and fine-tunes
# --------------------------------------------------------------------------------------------


def analysis_view(index: int, analysis: Any) -> dict[str, Any]:
    s = analysis.summary
    view: dict[str, Any] = {"id": f"ws{index}", "path": str(analysis.path),
                            "title": f"{s.tuned.get('name', '?')} vs {s.base.get('name', '?')}",
                            "summary": s, "curve": "", "heatmaps": [], "tuco": ""}
    if s.intruder_curve:
        eps = sorted(s.intruder_curve, key=float)
        view["curve"] = plots.line([float(e) for e in eps], [s.intruder_curve[e] for e in eps],
                                   xlabel="ε", ylabel="intruders (whole model)",
                                   prefix=f"ws{index}-curve")
    layers = sorted({m["layer"] for m in analysis.matrices if m.get("layer") not in (None, "")},
                    key=lambda x: float(x))
    modules = sorted({m["module"] for m in analysis.matrices if m.get("module")})
    for column, label in (("intruders", "intruders"), ("effective_rank", "ΔW effective rank")):
        values = {}
        for m in analysis.matrices:
            if m.get(column) in (None, "") or m.get("layer") in (None, "") or not m.get("module"):
                continue
            values[(m["layer"], m["module"])] = values.get((m["layer"], m["module"]), 0.0) + float(
                m[column])
        if values:
            view["heatmaps"].append({
                "label": label, "n": len(values),
                "svg": plots.heatmap(layers, modules, values, label=label,
                                     prefix=f"ws{index}-{column}")})
    if analysis.tuco:
        view["tuco"] = plots.histogram({t.task: t.per_prompt for t in analysis.tuco},
                                       xlabel="TuCo per prompt", prefix=f"ws{index}-tuco")
        view["tuco_rows"] = analysis.tuco
    return view


def finetune_view(index: int, ft: Any) -> dict[str, Any]:
    m = ft.manifest
    losses = list(m.loss_history)
    return {"id": f"ft{index}", "path": str(ft.path), "manifest": m,
            "loss": plots.line(list(range(1, len(losses) + 1)), losses, xlabel="step",
                               ylabel="loss", prefix=f"ft{index}-loss", marks=False,
                               smooth=True) if losses else ""}


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("evalkit.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    env.filters["visible"] = visible
    env.filters["tojson_sorted"] = lambda v: json.dumps(v, sort_keys=True, default=str)
    return env


def build_html(inputs: Inputs, *, max_flips: int = 200, title: str = "evalkit report") -> str:
    board = leaderboard(inputs)
    env = _environment()
    script = env.loader.get_source(env, "report.js")[0]
    # The page's only script is allowed by its hash: inline event handlers and any other
    # script are refused by the browser even if markup ever slipped through.
    script_hash = "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return env.get_template("report.html.j2").render(
        title=title, created=datetime.now(UTC).isoformat(timespec="seconds"),
        evalkit_version=__version__, sources=inputs.sources, board=board,
        families=[f for f in FAMILIES if any(r.family == f for r in board)],
        compares=[comparison_view(i, c, max_flips) for i, c in enumerate(inputs.compares)],
        analyses=[analysis_view(i, a) for i, a in enumerate(inputs.analyses)],
        finetunes=[finetune_view(i, f) for i, f in enumerate(inputs.finetunes)],
        runs=inputs.runs, script=script, script_hash=script_hash,
        style=env.loader.get_source(env, "report.css")[0])


def _md_cell(text: Any) -> str:
    # Untrusted text for Markdown: hidden characters shown, clipped, then the one cell escaper.
    return cell(visible(text, 300))


def build_markdown(inputs: Inputs, limit: int = MD_LIMIT) -> str:
    """The summary for a PR comment; flipped items are cut to fit ``limit``, with a count."""
    from evalkit.compare.render import row_cells

    head = ["# evalkit report", ""]
    board = leaderboard(inputs)
    # Tables get fixed shares of the limit (leaderboard 35%, verdict tables 40% together); the
    # flipped items get what is left. Every cut says how much was cut.
    n_cmp = max(len(inputs.compares), 1)
    if board:
        lines = table_lines(
            [("checkpoint", "left"), ("base", "left"), ("task", "left"), ("metric", "left"),
             ("score ± SE", "right"), ("n", "right"), ("Δ vs base", "right"), ("CI", "left"),
             ("verdict", "left")],
            [[visible(b.checkpoint, 300), visible(b.base or "", 300), visible(b.task, 300),
              visible(b.metric, 300), f"{_fmt(b.value)} ± {_fmt(b.stderr)}", b.n or "–",
              _fmt(b.delta, "+.4f") if b.delta is not None else "", b.ci, b.verdict]
             for b in board])
        head += ["## Leaderboard", "", *lines[:2]]
        head += _fit(int(limit * 0.35), "leaderboard row", lines[2:])
        head.append("")
    flips_md: list[list[str]] = []
    for c in inputs.compares:
        comp = c.comparison
        keys = ["task", "metric", "base", "tuned", "Δ", "95% CI", "test", "p Holm", "verdict"]
        columns = [("task", "left"), ("metric", "left"), ("base", "right"), ("tuned", "right"),
                   ("Δ", "right"), ("CI", "left"), ("test", "left"), ("p (Holm)", "right"),
                   ("verdict", "left")]
        lines = table_lines(columns, [[visible(c[k], 300) for k in keys] for r in comp.rows
                                      for c in [{**row_cells(r), "test": r.test}]])
        head += [f"## {_md_cell(comp.base_label)} → {_md_cell(comp.tuned_label)}", "",
                 *lines[:2]]
        head += _fit(int(limit * 0.4 / n_cmp), "verdict row", lines[2:])
        head.append("")
        flips_md.append([_flip_md(f) for f in c.flips])
    for a in inputs.analyses:
        s = a.summary
        head += [f"## Weight space: {_md_cell(s.tuned.get('name'))} vs "
                 f"{_md_cell(s.base.get('name'))}", "",
                 f"{s.matrices} matrices · intruders {s.intruders_total} · ΔW effective rank "
                 f"(mean) {s.effective_rank_mean:.1f} · relative update {s.rel_update:.4f}", ""]
    for f in inputs.finetunes:
        m = f.manifest
        head += [f"## Fine-tune {_md_cell(f.path.name)}", "",
                 f"{m.method} on {_md_cell(m.data.spec)} · {m.steps} steps · final loss "
                 f"{m.final_loss:.4f} · " + ", ".join(f"{k}={_md_cell(v)}"
                                                        for k, v in m.hyperparameters.items()), ""]
    text = "\n".join(head)
    footer = "\n_Made by evalkit report; the HTML report has every item._\n"
    budget = limit - len(text) - len(footer) - 200
    parts = []
    for c, flips in zip(inputs.compares, flips_md, strict=True):
        title = (f"\n### Flipped items: {_md_cell(c.comparison.base_label)} → "
                 f"{_md_cell(c.comparison.tuned_label)} ({len(flips)})\n")
        parts.append(title)
        budget -= len(title)
        shown = 0
        for block in flips:
            if len(block) + 120 > budget:
                break
            parts.append(block)
            budget -= len(block)
            shown += 1
        if shown < len(flips):
            note = (f"\n… and {len(flips) - shown} more flipped item(s) not shown here (size "
                    "limit of a PR comment); see index.html or comparison.json\n")
            parts.append(note)
            budget -= len(note)
    text = text + "".join(parts)
    if len(text) + len(footer) > limit:  # only when the fixed sections alone are too long
        cut = limit - len(footer) - 200
        text = text[:cut] + (f"\n\n… {len(text) - cut} more characters not shown here (size "
                             "limit of a PR comment); see index.html\n")
    return text + footer


def _fit(budget: int, what: str, lines: list[str]) -> list[str]:
    """As many table lines as fit in ``budget`` characters, and a line counting the rest."""
    kept, used = [], 0
    for line in lines:
        if used + len(line) + 1 > budget:
            return [*kept, "", f"… and {len(lines) - len(kept)} more {what}(s) not shown here "
                    "(size limit of a PR comment); see index.html"]
        kept.append(line)
        used += len(line) + 1
    return kept


def _flip_md(flip: Any) -> str:
    it = flip.item
    what = ", ".join(f"{_md_cell(m)}: {d}" for m, d in it.flips.items())
    def fence(label: str, text: Any) -> str:
        body = visible(text, 600).replace("```", "ʼʼʼ")
        return f"{label}:\n```text\n{body}\n```\n"
    return (f"\n**{_md_cell(flip.task)} / {_md_cell(it.doc_id)}** ({what})\n"
            + fence("target", it.target)
            + fence("base", it.base.completion if it.base else "(no sample stored)")
            + fence("tuned", it.tuned.completion if it.tuned else "(no sample stored)"))


def write_report(inputs: Inputs, out: Path, *, max_flips: int = 200) -> tuple[Path, Path]:
    """Write ``index.html`` and ``report.md`` into ``out``; returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "index.html", out / "report.md"
    html_path.write_text(build_html(inputs, max_flips=max_flips), encoding="utf-8")
    md_path.write_text(build_markdown(inputs), encoding="utf-8")
    return html_path, md_path
