"""Figures of a weight analysis (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.analysis import intruders

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.analysis.weightspace import WeightAnalysis


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def intruder_curve(analysis: WeightAnalysis, path: Path) -> None:
    """Intruder count summed over the model vs ε."""
    plt = _pyplot()
    grid = intruders.EPSILON_GRID
    counts = [sum(intruders.count(r["max_cos"], e) for r in analysis.rows) for e in grid]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(grid, counts, marker="o")
    ax.axvline(analysis.options.epsilon, color="grey", ls=":", lw=1)
    ax.set_xlabel("ε (intruder if max |cos| with every base vector < ε)")
    ax.set_ylabel(f"intruders in top {analysis.options.k}, model total")
    ax.set_title(f"{analysis.tuned['name']} vs {analysis.base['name']}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def layer_profile(df: pd.DataFrame, analysis: WeightAnalysis, path: Path) -> None:
    """Per-layer relative update (aggregate) and effective rank of ΔW per module."""
    plt = _pyplot()
    blocks = df[df["layer"].notna()]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    if len(blocks):
        g = blocks.groupby("layer")
        rel = (g["delta_norm"].apply(lambda x: (x**2).sum()) ** 0.5
               / g["base_norm"].apply(lambda x: (x**2).sum()) ** 0.5)
        ax1.plot(rel.index.astype(int), rel.values, marker=".")
        for module, m in blocks.groupby("module"):
            ax2.plot(m["layer"].astype(int), m["effective_rank"], marker=".", lw=1, label=module)
        ax2.legend(fontsize=7, ncol=4)
    from matplotlib.ticker import MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.ticklabel_format(axis="y", useOffset=False)
    ax1.set_ylabel("‖ΔW‖_F / ‖W_b‖_F")
    ax2.set_ylabel("effective rank of ΔW")
    ax2.set_xlabel("layer")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.set_title(f"{analysis.tuned['name']} vs {analysis.base['name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def similarity_heatmap(analysis: WeightAnalysis, path: Path) -> None:
    """|U_tᵀU_b| of one matrix: tuned top-k vectors (rows) against every base vector."""
    plt = _pyplot()
    h = analysis.heatmap
    cos = h["cos"]
    fig, ax = plt.subplots(figsize=(9, 2.5 + 0.15 * cos.shape[0]))
    im = ax.imshow(cos, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlabel("base left singular vector (by singular value)")
    ax.set_ylabel("tuned top-k vector")
    eps = analysis.options.epsilon
    n = intruders.count(h["max_cos"], eps)
    ax.set_title(f"|U_tᵀU_b| of {h['name']}  ({n} intruders at ε={eps})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(analysis: WeightAnalysis, df: pd.DataFrame, out: Path) -> dict[str, str]:
    files = {"plot_layers": "layers.png"}
    layer_profile(df, analysis, out / files["plot_layers"])
    if not analysis.options.spectra_only:
        files["plot_intruders"] = "intruders_vs_epsilon.png"
        intruder_curve(analysis, out / files["plot_intruders"])
    if analysis.heatmap is not None:
        files["plot_heatmap"] = "similarity_heatmap.png"
        similarity_heatmap(analysis, out / files["plot_heatmap"])
    return files
