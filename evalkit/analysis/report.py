"""Tables, the JSON summary (a pydantic schema) and the console view of a weight analysis.

Files written to the output folder:

- ``matrices.parquet`` / ``matrices.csv``: one row per analysed matrix; ``max_cos_j`` holds s_j
  (max |cos| of the j-th tuned vector with every base vector) and ``sigma_j`` its singular
  value, NaN past the matrix's smaller dimension (and σ for a matrix the fine-tune left
  unchanged, whose vectors are the base's)
- ``layers.parquet`` / ``layers.csv``: one row per decoder layer (aggregates)
- ``skipped.csv``: every tensor not analysed, with the reason
- ``summary.json``: ``AnalysisSummary`` below
- plots (see ``plots.py``)
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from evalkit.analysis import intruders
from evalkit.analysis.spectral import noise_floor

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.analysis.weightspace import WeightAnalysis

SCHEMA_VERSION = 1


class Skipped(BaseModel):
    name: str
    shape: list[int]
    reason: str


class GroupSummary(BaseModel):
    """Aggregates over a group of matrices (one decoder layer, or one module type)."""

    key: str
    matrices: int
    rel_update: float  # √Σ‖ΔW‖²_F / √Σ‖W_b‖²_F over the group
    effective_rank_mean: float
    stable_rank_mean: float | None
    energy_rank_mean: float
    subspace_sim_mean: float | None = None
    intruders: int | None = None


class AnalysisSummary(BaseModel):
    schema_version: int = SCHEMA_VERSION
    created: str
    base: dict[str, Any]
    tuned: dict[str, Any]
    settings: dict[str, Any]  # k, epsilon, modules, include_embeddings, device, dtype, ...
    lora: dict[str, Any] | None  # r, lora_alpha, use_rslora, scale(s), patterns, modules
    matrices: int
    skipped: list[Skipped]
    # Whole model. The headline number of the intruder paper is intruders_total.
    intruders_total: int | None
    intruder_curve: dict[str, int] | None  # ε ("0.1" … "0.9") → intruders summed over the model
    matrices_with_intruders: int | None
    rel_update: float
    effective_rank_mean: float
    effective_rank_median: float
    stable_rank_mean: float | None
    energy_rank_mean: float
    subspace_sim_mean: float | None
    # Storage precision: ΔW below ~u/√3·‖W‖ is rounding, not training (bf16: 0.23%).
    storage_dtypes: list[str]
    noise_floor: dict[str, float]
    matrices_below_noise_floor: int
    layers: list[GroupSummary]
    modules: list[GroupSummary]
    heatmap: str | None
    cache: dict[str, Any]
    seconds: float
    files: dict[str, str]


def matrices_frame(analysis: WeightAnalysis) -> pd.DataFrame:
    import pandas as pd

    k = analysis.options.k
    records = []
    for row in analysis.rows:
        rec = {key: value for key, value in row.items() if key not in ("max_cos", "sigma")}
        for col in ("max_cos", "sigma"):
            values = row.get(col) or []
            for j in range(k):
                rec[f"{col}_{j + 1}"] = values[j] if j < len(values) else math.nan
        records.append(rec)
    return pd.DataFrame.from_records(records)


def _group(df: pd.DataFrame, by: str, intruder_cols: bool) -> list[GroupSummary]:
    out = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        base = math.sqrt(float((g["base_norm"] ** 2).sum()))
        out.append(GroupSummary(
            key=str(key),
            matrices=len(g),
            rel_update=math.sqrt(float((g["delta_norm"] ** 2).sum())) / base if base else math.nan,
            effective_rank_mean=float(g["effective_rank"].mean()),
            stable_rank_mean=_mean_or_none(g["stable_rank"]),
            energy_rank_mean=float(g["energy_rank"].mean()),
            subspace_sim_mean=float(g["subspace_sim"].mean()) if intruder_cols else None,
            intruders=int(g["intruders"].sum()) if intruder_cols else None,
        ))
    return out


def _mean_or_none(col: pd.Series) -> float | None:
    v = col.dropna()
    return float(v.mean()) if len(v) else None


def summarize(analysis: WeightAnalysis, df: pd.DataFrame, files: dict[str, str]
              ) -> AnalysisSummary:
    opts = analysis.options
    with_intruders = not opts.spectra_only
    curve = None
    total = with_count = None
    if with_intruders:
        s_all = [row["max_cos"] for row in analysis.rows]
        curve = {f"{eps:.1f}": sum(intruders.count(s, eps) for s in s_all)
                 for eps in intruders.EPSILON_GRID}
        total = int(df["intruders"].sum())
        with_count = int((df["intruders"] > 0).sum())
    base_total = math.sqrt(float((df["base_norm"] ** 2).sum()))
    floors = {d: noise_floor(d) for d in analysis.storage_dtypes}
    worst_floor = max((f for f in floors.values() if not math.isnan(f)), default=0.0)
    layer_df = df[df["layer"].notna()].copy()
    layer_df["layer"] = layer_df["layer"].astype(int)
    return AnalysisSummary(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        base=analysis.base,
        tuned=analysis.tuned,
        settings={"k": opts.k, "epsilon": opts.epsilon, "modules": opts.modules,
                  "include_embeddings": opts.include_embeddings, "device": opts.device,
                  "dtype": opts.dtype, "spectra_only": opts.spectra_only,
                  "epsilon_grid": list(intruders.EPSILON_GRID)},
        lora=analysis.lora,
        matrices=len(df),
        skipped=[Skipped(**s) for s in analysis.skipped],
        intruders_total=total,
        intruder_curve=curve,
        matrices_with_intruders=with_count,
        rel_update=math.sqrt(float((df["delta_norm"] ** 2).sum())) / base_total
        if base_total else math.nan,
        effective_rank_mean=float(df["effective_rank"].mean()),
        effective_rank_median=float(df["effective_rank"].median()),
        stable_rank_mean=_mean_or_none(df["stable_rank"]),
        energy_rank_mean=float(df["energy_rank"].mean()),
        subspace_sim_mean=float(df["subspace_sim"].mean()) if with_intruders else None,
        storage_dtypes=analysis.storage_dtypes,
        noise_floor=floors,
        # A changed matrix whose update is within 3× the rounding floor: its ranks are noise.
        matrices_below_noise_floor=int(((df["rel_update"] > 0)
                                        & (df["rel_update"] < 3 * worst_floor)).sum()),
        layers=_group(layer_df, "layer", with_intruders),
        modules=_group(df, "module", with_intruders),
        heatmap=analysis.heatmap["name"] if analysis.heatmap else None,
        cache=analysis.cache,
        seconds=round(analysis.seconds, 3),
        files=files,
    )


def write(analysis: WeightAnalysis, out: Path, plots: bool = True) -> AnalysisSummary:
    """Write tables, plots and summary.json into ``out``; return the summary."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    df = matrices_frame(analysis)
    files = {"matrices": "matrices.parquet", "matrices_csv": "matrices.csv",
             "layers": "layers.parquet", "layers_csv": "layers.csv", "skipped": "skipped.csv",
             "summary": "summary.json"}
    df.to_parquet(out / files["matrices"], index=False)
    df.to_csv(out / files["matrices_csv"], index=False)
    pd.DataFrame(analysis.skipped, columns=["name", "shape", "reason"]).to_csv(
        out / files["skipped"], index=False)
    if plots:
        from evalkit.analysis import plots as plotting

        files.update(plotting.write_all(analysis, df, out))
    summary = summarize(analysis, df, files)
    layers = pd.DataFrame([g.model_dump() for g in summary.layers]).rename(
        columns={"key": "layer"})
    layers.to_parquet(out / files["layers"], index=False)
    layers.to_csv(out / files["layers_csv"], index=False)
    (out / files["summary"]).write_text(summary.model_dump_json(indent=2))
    return summary


def render(summary: AnalysisSummary, console: Any = None) -> None:
    """Per-module table and the whole-model line on the console."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    intr = summary.intruders_total is not None
    table = Table(title=f"{summary.tuned['name']} vs {summary.base['name']}: "
                        f"{summary.matrices} matrices", title_justify="left")
    for col in ("module", "matrices", "rel. update", "eff. rank ΔW", "stable rank ΔW",
                *(("subspace sim", f"intruders@{summary.settings['epsilon']}") if intr else ())):
        table.add_column(col, justify="left" if col == "module" else "right")
    for g in [*summary.modules, _total_row(summary)]:
        table.add_row(g.key, str(g.matrices), f"{g.rel_update:.4f}",
                      f"{g.effective_rank_mean:.1f}", _fmt(g.stable_rank_mean, ".2f"),
                      *((_fmt(g.subspace_sim_mean, ".3f"), str(g.intruders)) if intr else ()))
    console.print(table)
    if intr:
        curve = "  ".join(f"ε={e}:{n}" for e, n in summary.intruder_curve.items())
        console.print(f"intruders (k={summary.settings['k']}) summed over the model: "
                      f"[bold]{summary.intruders_total}[/bold]   {curve}")
    if summary.lora:
        lo = summary.lora
        console.print(f"LoRA r={lo['r']} alpha={lo['lora_alpha']} rslora={lo['use_rslora']} "
                      f"scale={lo['scale'] if lo['scale'] is not None else lo['scales']}")
    if summary.matrices_below_noise_floor:
        console.print(f"[yellow]{summary.matrices_below_noise_floor} matrices changed by less "
                      f"than 3× the {'/'.join(summary.storage_dtypes)} rounding floor: their "
                      "ranks measure rounding noise[/yellow]")
    reasons: dict[str, int] = {}
    for s in summary.skipped:
        key = s.reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    if reasons:
        console.print("skipped: " + "; ".join(f"{n} × {r}" for r, n in reasons.items())
                      + f" (list: {summary.files.get('skipped')})")
    cache = summary.cache
    console.print(f"[dim]base SVD cache: {cache['hits']} hits, {cache['misses']} computed; "
                  f"{summary.seconds:.1f} s[/dim]")


def _total_row(summary: AnalysisSummary) -> GroupSummary:
    return GroupSummary(key="all", matrices=summary.matrices, rel_update=summary.rel_update,
                        effective_rank_mean=summary.effective_rank_mean,
                        stable_rank_mean=summary.stable_rank_mean,
                        energy_rank_mean=summary.energy_rank_mean,
                        subspace_sim_mean=summary.subspace_sim_mean,
                        intruders=summary.intruders_total)


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
