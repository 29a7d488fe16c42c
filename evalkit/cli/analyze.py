"""`evalkit analyze` (weight-space analysis, TuCo) and `evalkit edit` (the fix loop).

The work lives in ``evalkit.analysis``; this module parses, calls, prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evalkit.cli.app import app
from evalkit.cli.options import StateDictConfig
from evalkit.errors import EvalkitError

_DEVICE = typer.Option(help="cpu or cuda (SVDs on the GPU in float32; same code path).")
_DTYPE = typer.Option(help="Precision of the base SVD: float32 (default) or float64.")
_MODULES = typer.Option(help="Comma-separated module names (q_proj,v_proj) or name globs; "
                             "default: every 2-D matrix inside the transformer blocks.")


def _split(value: str | None) -> list[str] | None:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    return items or None


@app.command()
def analyze(
    base: Annotated[str, typer.Argument(help="BASE checkpoint (folder, adapter, .gguf, "
                                             ".ckpt/.pt state dict, hub id, "
                                             "builtin:smollm2-135m).")],
    tuned: Annotated[str, typer.Argument(help="TUNED checkpoint (a LoRA adapter is merged per "
                                              "matrix in memory).")],
    k: Annotated[int, typer.Option(help="Top-k tuned singular vectors tested for intruders.")]
    = 10,
    epsilon: Annotated[float, typer.Option(help="Intruder threshold on max |cos|.")] = 0.5,
    modules: Annotated[str | None, _MODULES] = None,
    include_embeddings: Annotated[bool, typer.Option(help="Also analyse embeddings and the LM "
                                                          "head.")] = False,
    device: Annotated[str, _DEVICE] = "cpu",
    dtype: Annotated[str, _DTYPE] = "float32",
    spectra_only: Annotated[bool, typer.Option(help="Only ΔW spectra (relative update, ranks); "
                                                    "no SVDs of the models, no intruders.")]
    = False,
    heatmap: Annotated[str | None, typer.Option(help="Matrix for the |U_tᵀU_b| heat map "
                                                     "(default: the one with most intruders).")]
    = None,
    cache: Annotated[bool, typer.Option(help="Reuse/store the base model's SVDs (keyed by its "
                                             "fingerprint).")] = True,
    tuco: Annotated[bool, typer.Option(help="Compute TuCo per prompt instead of the weight "
                                            "analysis (needs --task or --prompts).")] = False,
    task: Annotated[str | None, typer.Option(help="Task(s) for --tuco, comma-separated.")]
    = None,
    prompts: Annotated[Path | None, typer.Option(help="Prompts file for --tuco (.jsonl or one "
                                                      "per line).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many prompts per task.")]
    = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/analyze/"
                                                  "TUNED-vs-BASE).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    config: StateDictConfig = None,
) -> None:
    """How did the fine-tune change the weights? Intruder dimensions, ΔW ranks, TuCo."""
    from rich.console import Console

    from evalkit.checkpoints import resolve

    console = Console()
    base_ckpt = resolve(base, config=config)
    tuned_ckpt = resolve(tuned, config=config, fallback=base_ckpt)
    out = out or Path("runs") / "analyze" / f"{tuned_ckpt.name}-vs-{base_ckpt.name}"
    from evalkit.paths import writable_folder

    writable_folder(out, "--out")
    if tuco:
        _tuco(base_ckpt, tuned_ckpt, task, prompts, limit, device, out, quiet, console)
        return
    if task or prompts:
        raise EvalkitError("--task/--prompts go with --tuco")
    from evalkit.analysis import report
    from evalkit.analysis.weightspace import Options, analyze_weights

    options = Options(k=k, epsilon=epsilon, modules=_split(modules),
                      include_embeddings=include_embeddings, device=device, dtype=dtype,
                      spectra_only=spectra_only, heatmap=heatmap, use_cache=cache,
                      progress=not quiet)
    analysis = analyze_weights(base_ckpt, tuned_ckpt, options)
    summary = report.write(analysis, out)
    report.render(summary, console)
    console.print(f"wrote {out}/ ({', '.join(sorted(summary.files.values()))})")


def _tuco(base, tuned, task, prompts, limit, device, out, quiet, console) -> None:
    from evalkit.analysis import tuco as tc

    if bool(task) == bool(prompts):
        raise EvalkitError("--tuco needs exactly one of --task or --prompts")
    models = tc.load_pair(base, tuned, device)
    if prompts:
        items = tc.read_prompts(prompts)[:limit]
        jobs = [(prompts.stem, lambda items=items: tc.tuco_for_prompts(
            base, tuned, items, name=prompts.stem, progress=not quiet, models=models))]
    else:
        jobs = [(name, lambda name=name: tc.task_tuco(base, tuned, name, limit=limit,
                                                       progress=not quiet, models=models))
                for name in _split(task) or []]
    for name, run in jobs:
        result = run()
        files = result.write(out)
        s = result.summary
        console.print(f"TuCo {name}: mean [bold]{s.mean:.4f}[/bold] (sd {s.std:.4f}, median "
                      f"{s.median:.4f}, 10–90% {s.quantiles['0.1']:.4f}–{s.quantiles['0.9']:.4f}, "
                      f"n={s.n}) → {out / files['summary']}")


@app.command()
def edit(
    tuned: Annotated[str, typer.Argument(help="TUNED checkpoint to edit.")],
    base: Annotated[str, typer.Option(help="BASE checkpoint TUNED was fine-tuned from.")],
    out: Annotated[Path, typer.Option(help="Folder for the edited checkpoint (must not "
                                            "exist).")],
    scale_intruders: Annotated[float | None, typer.Option(
        help="Scale the top intruder direction of each matrix by this λ (paper: 0.3–0.75).")]
    = None,
    lines_alpha: Annotated[float | None, typer.Option(
        help="LiNeS: scale the update of layer l by α + β·l/(L−1).")] = None,
    lines_beta: Annotated[float | None, typer.Option(help="LiNeS β (default 1 − α).")] = None,
    graft_fraction: Annotated[float | None, typer.Option(
        help="Keep only this fraction of parameters with the largest |Δθ| (graft).")] = None,
    k: Annotated[int, typer.Option(help="Top-k vectors searched for the intruder.")] = 10,
    epsilon: Annotated[float, typer.Option(help="Intruder threshold on max |cos|.")] = 0.5,
    modules: Annotated[str | None, _MODULES] = None,
    include_embeddings: Annotated[bool, typer.Option(help="Also edit embeddings / LM head "
                                                          "(--scale-intruders).")] = False,
    device: Annotated[str, _DEVICE] = "cpu",
    dtype: Annotated[str, _DTYPE] = "float32",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    config: StateDictConfig = None,
) -> None:
    """Write an edited checkpoint (intruder scaling, LiNeS, graft) for `compare` to measure."""
    from rich.console import Console

    from evalkit.analysis import edit as ed
    from evalkit.checkpoints import resolve

    chosen = [x is not None for x in (scale_intruders, lines_alpha, graft_fraction)]
    if sum(chosen) != 1:
        raise EvalkitError("choose exactly one edit: --scale-intruders, --lines-alpha or "
                           "--graft-fraction")
    if lines_beta is not None and lines_alpha is None:
        raise EvalkitError("--lines-beta goes with --lines-alpha")
    from evalkit.paths import writable_folder

    writable_folder(out.absolute().parent, "the folder of --out")
    base_ckpt = resolve(base, config=config)
    tuned_ckpt = resolve(tuned, config=config, fallback=base_ckpt)
    console = Console()
    if scale_intruders is not None:
        m = ed.scale_intruders(base_ckpt, tuned_ckpt, out, lam=scale_intruders, k=k,
                               epsilon=epsilon, modules=_split(modules),
                               include_embeddings=include_embeddings, device=device,
                               dtype=dtype, progress=not quiet)
        console.print(f"scaled the top intruder by λ={scale_intruders} in {len(m['edited'])} "
                      f"of {m['matrices']} matrices")
    elif lines_alpha is not None:
        if modules or include_embeddings:
            raise EvalkitError("LiNeS scales every parameter; --modules/--include-embeddings "
                               "do not apply")
        m = ed.lines(base_ckpt, tuned_ckpt, out, alpha=lines_alpha, beta=lines_beta,
                     progress=not quiet)
        console.print(f"LiNeS α={m['alpha']} β={m['beta']:.4g} over {m['num_layers']} layers "
                      f"(λ from {m['lambda_by_layer']['0']:.4g} to "
                      f"{m['lambda_by_layer'][str(m['num_layers'] - 1)]:.4g})")
    else:
        if modules or include_embeddings:
            raise EvalkitError("the graft ranks every parameter; --modules/--include-embeddings "
                               "do not apply")
        m = ed.graft(base_ckpt, tuned_ckpt, out, fraction=graft_fraction, progress=not quiet)
        console.print(f"grafted {m['kept']} of {m['parameters']} parameters (|Δθ| ≥ "
                      f"{m['threshold']:.3g})")
    console.print(f"wrote {out}/ — measure it: evalkit compare {base} {out} --tasks ...")
