"""`evalkit analyze` vs WeightWatcher 0.7.7 on the same BASE/TUNED pair: time and peak RSS.

    .venv/bin/python bench/analyze_throughput.py [--base SPEC] [--tuned PATH] [--repeat 3]

Every measurement runs in a fresh subprocess (so peak RSS is that job's alone), and the jobs are
interleaved across repeats so background load hits all of them alike. Reported per job: the
median and the best wall time of the measured call, the process's peak RSS (VmHWM), and ratios
to WeightWatcher. Jobs:

- ``weightwatcher``: both models loaded with transformers (load time reported apart), then
  ``WeightWatcher(model=tuned, base_model=base).analyze()`` — eigenvalues of ΔW per layer
  (plus its power-law fits), i.e. ΔW spectra only.
- ``evalkit-spectra``: ``analyze --spectra-only`` — the same work (ΔW spectra) + tables, plots.
- ``evalkit-cold``: the full analysis (intruders k=10 + all spectral summaries) with an empty
  base-SVD cache; ``evalkit-warm``: the same with the base's SVDs cached by the cold run.

WeightWatcher analyses every Linear and Embedding module (212 on the embedded model: 210 block
matrices, the embedding and the tied LM head), so the evalkit jobs pass --include-embeddings
(211 matrices: a tied head is not stored twice); ``--no-embeddings`` runs the default selection.
evalkit timings include reading both checkpoints from safetensors and writing every output
file; the checkpoints are resolved (fingerprinted) before the clock starts, as WeightWatcher's
model loading is outside its clock, and so are library imports on both sides (WeightWatcher
imports pandas and pyplot at import time; the evalkit jobs import them before their clock).
"whole process" is each job's wall time from interpreter start to exit, everything included.
Without --tuned, TUNED is made once from BASE: every block
matrix moved by a dense 1e-3 relative perturbation plus a rank-8 update of 2% of its norm.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOBS = ("weightwatcher", "evalkit-spectra", "evalkit-cold", "evalkit-warm")


def synthetic_tuned(base: Path, dest: Path) -> Path:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    if (dest / "model.safetensors").exists():
        return dest
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    g = torch.Generator().manual_seed(0)
    for f in sorted(tmp.glob("*.safetensors")):
        sd = load_file(str(f))
        for k, v in sd.items():
            if v.ndim == 2 and ".layers." in k:
                w = v.float()
                a = torch.randn(w.shape[0], 8, generator=g)
                b = torch.randn(8, w.shape[1], generator=g)
                low = a @ b
                sd[k] = (w + 1e-3 * w.std() * torch.randn(w.shape, generator=g)
                         + 0.02 * w.norm() / low.norm() * low).to(v.dtype)
        save_file(sd, str(f), metadata={"format": "pt"})
    tmp.rename(dest)
    return dest


def child(job: str, base: str, tuned: str, out: str, embeddings: bool) -> dict:
    """One measurement inside a fresh interpreter; returns seconds and peak RSS."""
    result: dict = {"job": job}
    if job == "weightwatcher":
        import torch
        from transformers import AutoModelForCausalLM
        from weightwatcher import WeightWatcher

        t0 = time.perf_counter()
        b = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        t = AutoModelForCausalLM.from_pretrained(tuned, dtype=torch.float32)
        result["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        details = WeightWatcher(model=t, base_model=b).analyze()
        result["seconds"] = time.perf_counter() - t0
        result["layers"] = len(details)
    else:
        # WeightWatcher imports pandas and pyplot (and more) at import time, before its clock
        # starts; evalkit imports them when it writes its tables and plots, so they are
        # imported here before evalkit's clock starts. Peak RSS includes them either way.
        import matplotlib
        import pandas  # noqa: F401

        matplotlib.use("Agg")
        import matplotlib.pyplot

        from evalkit.analysis import report
        from evalkit.analysis.weightspace import Options, analyze_weights
        from evalkit.checkpoints import resolve

        b, t = resolve(base), resolve(tuned)
        t0 = time.perf_counter()
        analysis = analyze_weights(b, t, Options(spectra_only=job == "evalkit-spectra",
                                                 include_embeddings=embeddings,
                                                 progress=False))
        summary = report.write(analysis, Path(out))
        result["seconds"] = time.perf_counter() - t0
        result["layers"] = summary.matrices
        result["intruders_total"] = summary.intruders_total
        result["cache"] = {k: summary.cache[k] for k in ("hits", "misses")}
    result["peak_rss_mb"] = peak_rss_mb()
    result["process_s"] = time.time() - process_start()
    return result


def process_start() -> float:
    """This process's start time (epoch seconds), from /proc: the whole job, imports included."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries the parent's high-water
    mark across fork+exec into ru_maxrss, which would charge the bench driver to every job."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(job: str, base: Path, tuned: Path, cache: Path, out: Path, embeddings: bool
            ) -> dict:
    env = {**os.environ, "EVALKIT_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__, "--child", job, "--base", str(base),
                           "--tuned", str(tuned), "--out", str(out),
                           *([] if embeddings else ["--no-embeddings"])],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="builtin:smollm2-135m")
    p.add_argument("--tuned", default=None, help="default: a synthetic full fine-tune of BASE")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--jobs", default=",".join(JOBS))
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--no-embeddings", action="store_true",
                   help="evalkit: default selection (block matrices only)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.base, args.tuned, args.out,
                               not args.no_embeddings)))
        return

    from evalkit.checkpoints import resolve
    from evalkit.paths import cache_dir

    base = resolve(args.base).path
    tuned = Path(args.tuned) if args.tuned else synthetic_tuned(
        base, cache_dir() / "bench" / f"{base.name}-synthetic-ft")
    jobs = [j for j in args.jobs.split(",") if j]
    runs: dict[str, list[dict]] = {j: [] for j in jobs}
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
        for i in range(args.repeat):
            cache = Path(tmp) / f"cache-{i}"  # fresh per repeat: cold is cold, warm reuses it
            for job in jobs:
                if job == "evalkit-warm" and "evalkit-cold" not in jobs:
                    run_job("evalkit-cold", base, tuned, cache, Path(tmp) / "prime",
                            not args.no_embeddings)
                r = run_job(job, base, tuned, cache, Path(tmp) / f"{job}-{i}",
                            not args.no_embeddings)
                runs[job].append(r)
                print(f"[{i + 1}/{args.repeat}] {job:16s} {r['seconds']:7.2f} s  "
                      f"{r['peak_rss_mb']:7.0f} MB", file=sys.stderr)
    table = summarize(runs)
    print(render(table, base, tuned))
    if args.json:
        args.json.write_text(json.dumps({"base": str(base), "tuned": str(tuned),
                                         "cpus": os.cpu_count(), "results": table,
                                         "runs": runs}, indent=2))


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    table = {}
    for job, rs in runs.items():
        secs = [r["seconds"] for r in rs]
        table[job] = {"median_s": statistics.median(secs), "best_s": min(secs),
                      "process_median_s": statistics.median(r["process_s"] for r in rs),
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                      "layers": rs[0]["layers"], "n": len(rs),
                      **({"load_s": statistics.median(r["load_s"] for r in rs)}
                         if "load_s" in rs[0] else {}),
                      **({"intruders_total": rs[0]["intruders_total"]}
                         if "intruders_total" in rs[0] else {})}
    ww = table.get("weightwatcher")
    if ww:
        for row in table.values():
            row["time_vs_ww_median"] = row["median_s"] / ww["median_s"]
            row["time_vs_ww_best"] = row["best_s"] / ww["best_s"]
            row["rss_vs_ww"] = row["peak_rss_mb"] / ww["peak_rss_mb"]
    return table


def render(table: dict[str, dict], base: Path, tuned: Path) -> str:
    lines = [f"BASE {base}", f"TUNED {tuned}", "",
             "| job | matrices | median s | best s | × WW (median) | × WW (best) | peak RSS MB "
             "| × WW RSS | whole process s |", "|---|---|---|---|---|---|---|---|---|"]
    for job, r in table.items():
        lines.append(f"| {job} | {r['layers']} | {r['median_s']:.2f} | {r['best_s']:.2f} | "
                     f"{r.get('time_vs_ww_median', float('nan')):.2f} | "
                     f"{r.get('time_vs_ww_best', float('nan')):.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r.get('rss_vs_ww', float('nan')):.2f} | {r['process_median_s']:.2f} |")
    if "weightwatcher" in table:
        lines.append(f"\nWeightWatcher model loading (not in its time): "
                     f"{table['weightwatcher']['load_s']:.2f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
