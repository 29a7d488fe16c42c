"""`evalkit report` at scale: 20 comparisons × 10 tasks × 1,000 items.

Builds the inputs once (run folders by evalkit.testing, comparisons by evalkit.compare; not
timed), then times `make_report` over all 20 compare folders and reports the HTML size.
Targets (issue 15): ≤ 10 s and index.html ≤ 10 MB.

    PYTHONPATH=. python bench/report_scale.py [--root /tmp/report-scale] [--comparisons 20]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

WORDS = ("the", "answer", "is", "def", "return", "x", "=", "for", "in", "range", "print",
         "so", "total", "each", "apples", "step", "then", "we", "get", "if", "else", "+", "*")


def _text(rnd: random.Random, n: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(n))


def build(root: Path, comparisons: int, tasks: int, items: int) -> list[Path]:
    from evalkit.compare import compare_paths, write_comparison
    from evalkit.testing import make_run_folder

    folders = []
    rnd = random.Random(0)
    names = [f"task{t:02d}" for t in range(tasks)]
    base_scores = {t: {str(i): float(rnd.random() < 0.5) for i in range(items)} for t in names}
    for t in names:
        if not (root / "base" / t / "metrics.json").exists():
            make_run_folder(root / "base" / t, base_scores[t], task=t, checkpoint="base",
                            completions={str(i): _text(rnd, 60) for i in range(items)})
    for c in range(comparisons):
        out = root / f"compare{c:02d}"
        folders.append(out)
        if (out / "comparison.json").exists():
            continue
        for t in names:
            # ~15% of items flip: a realistic fine-tune
            tuned = {d: (1.0 - v if rnd.random() < 0.15 else v)
                     for d, v in base_scores[t].items()}
            make_run_folder(root / f"tuned{c:02d}" / t, tuned, task=t, checkpoint=f"tuned{c:02d}",
                            completions={str(i): _text(rnd, 60) for i in range(items)})
        write_comparison(compare_paths(root / "base", root / f"tuned{c:02d}", resamples=1000),
                         out)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path("/tmp/report-scale"))
    parser.add_argument("--comparisons", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--items", type=int, default=1000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    folders = build(args.root, args.comparisons, args.tasks, args.items)
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s")
    from evalkit.report import make_report

    t0, c0 = time.perf_counter(), time.process_time()
    html, md = make_report(folders, args.root / "report")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    size = html.stat().st_size
    print(f"report over {args.comparisons} comparisons × {args.tasks} tasks × {args.items} items:"
          f" {seconds:.2f} s wall, {cpu:.2f} s CPU (the machine is shared: CPU time is what"
          f" one idle core would take), index.html {size / 1e6:.2f} MB, report.md "
          f"{len(md.read_text(encoding='utf-8')):,} chars")


if __name__ == "__main__":
    main()
