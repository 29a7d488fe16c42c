"""The report's plots as inline SVG strings (matplotlib, no JavaScript, no images to fetch).

Every data mark carries an ``id`` (matplotlib's ``gid``) of the form ``<prefix>-mark-<i>``, so a
reader, and the browser tests, can find and count them.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from typing import Any

_counter = itertools.count()


def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.figure import Figure  # no pyplot, no GUI backend: renders straight to SVG

    return Figure(figsize=(width, height), layout=layout)


def _svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    # Several SVGs share one HTML document: a distinct salt keeps matplotlib's generated ids
    # (clip paths, markers) from colliding between them. Text stays text (small, selectable).
    with matplotlib.rc_context({"svg.hashsalt": f"evalkit-{next(_counter)}",
                                "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE (invalid inside HTML)


def forest(rows: Sequence[dict[str, Any]], prefix: str) -> str:
    """Δ with its CI per task × metric; rows: label, delta, ci_low, ci_high, verdict."""
    colours = {"improved": "#1a7f37", "regressed": "#cf222e"}
    height = 0.8 + 0.32 * max(len(rows), 1)
    # Fixed margins (not constrained layout: 20 forest plots must render in a few seconds).
    fig = _figure(7.0, height, layout=None)
    longest = max((len(r["label"]) for r in rows), default=10)
    left = min(0.6, 0.1 + longest * 0.055 / 7.0)
    fig.subplots_adjust(left=left, right=0.97, top=1 - 0.15 / height, bottom=0.55 / height)
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        delta = row["delta"]
        if delta is None or not math.isfinite(delta):
            continue
        colour = colours.get(row["verdict"], "#57606a")
        lo, hi = row.get("ci_low"), row.get("ci_high")
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color=colour, lw=1.5, gid=f"{prefix}-ci-{i}")
        ax.plot([delta], [y], "o", color=colour, ms=5, gid=f"{prefix}-mark-{i}")
    ax.axvline(0, color="#8c959f", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), [r["label"] for r in reversed(rows)], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("Δ (tuned − base) with CI", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    return _svg(fig)


def line(xs: Sequence[float], ys: Sequence[float], *, xlabel: str, ylabel: str, prefix: str,
         marks: bool = True, smooth: bool = False) -> str:
    fig = _figure(5.0, 2.6)
    ax = fig.add_subplot()
    ax.plot(xs, ys, lw=1.2, color="#0969da", alpha=0.5 if smooth else 1.0, gid=f"{prefix}-line")
    if smooth and len(ys) > 20:
        window = max(len(ys) // 20, 2)
        avg = [sum(ys[max(0, i - window + 1):i + 1]) / len(ys[max(0, i - window + 1):i + 1])
               for i in range(len(ys))]
        ax.plot(xs, avg, lw=1.6, color="#0969da", label=f"moving average ({window})")
        ax.legend(fontsize=7)
    if marks:
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            ax.plot([x], [y], "o", ms=3.5, color="#0969da", gid=f"{prefix}-mark-{i}")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=8)
    return _svg(fig)


def heatmap(layers: Sequence[str], modules: Sequence[str], values: dict[tuple[str, str], float],
            *, label: str, prefix: str) -> str:
    """One rectangle per (layer, module) cell that has a value."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    fig = _figure(6.5, 1.0 + 0.3 * len(modules))
    ax = fig.add_subplot()
    finite = [v for v in values.values() if math.isfinite(v)]
    norm = Normalize(vmin=min(finite, default=0.0), vmax=max(max(finite, default=1.0),
                                                             min(finite, default=0.0) + 1e-9))
    cmap = colormaps["viridis"]
    for i, ((layer, module), v) in enumerate(sorted(values.items())):
        x, y = layers.index(layer), modules.index(module)
        colour = cmap(norm(v)) if math.isfinite(v) else "#d0d7de"
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=colour, edgecolor="white",
                               lw=0.5, gid=f"{prefix}-mark-{i}"))
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.set_ylim(-0.5, len(modules) - 0.5)
    step = max(1, len(layers) // 15)
    ax.set_xticks(range(0, len(layers), step), list(layers)[::step], fontsize=7)
    ax.set_yticks(range(len(modules)), modules, fontsize=7)
    ax.set_xlabel("layer", fontsize=8)
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label, pad=0.01)
    return _svg(fig)


def histogram(groups: dict[str, Sequence[float]], *, xlabel: str, prefix: str) -> str:
    fig = _figure(5.0, 2.6)
    ax = fig.add_subplot()
    for i, (name, values) in enumerate(groups.items()):
        ax.hist(values, bins=20, alpha=0.6, label=name, gid=f"{prefix}-mark-{i}")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("prompts", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7)
    return _svg(fig)
