"""Compare two sets of runs item by item: pairing, statistics rows, Holm, verdicts, recovery,
the CI gate, rendering, and running two checkpoints to get there.

- schema.py: comparison.json and baseline models;  load.py: runs, baselines, comparisons;
- pair.py: pairing rules and refusals;  rows.py: metric rows, Holm, verdicts, flipped items;
- render.py: comparison.json, rich table, Markdown;  recovery.py: conjugate-prompt recovery;
- gate.py: ``evalkit check``;  orchestrate.py: checkpoints in, comparison out.
"""

from evalkit.compare.load import load_comparison, load_run, load_runs
from evalkit.compare.render import comparison_markdown, comparison_table, write_comparison
from evalkit.compare.rows import compare_paths, compare_runs
from evalkit.compare.schema import Comparison

__all__ = ["Comparison", "compare_paths", "compare_runs", "comparison_markdown",
           "comparison_table", "load_comparison", "load_run", "load_runs", "write_comparison"]
