"""Shareable results: the ``results/`` leaderboard store (``evalkit publish``) and the
self-contained HTML / Markdown report (``evalkit report``).

Light dependencies only (pydantic, jinja2, matplotlib): nothing here imports torch or vllm.
"""

from __future__ import annotations

from pathlib import Path


def make_report(paths: list[Path], out: Path, *, max_flips: int = 200) -> tuple[Path, Path]:
    """Read every input and write ``out/index.html`` and ``out/report.md`` (the one call the
    CLI and the demo make)."""
    from evalkit.report.collect import collect
    from evalkit.report.render import write_report

    return write_report(collect([Path(p) for p in paths]), Path(out), max_flips=max_flips)
