"""Markdown tables: one row per line whatever the cell text, no raw HTML, code cells literal."""

from __future__ import annotations

from evalkit.markdown import Code, table_lines


def test_hostile_cells_stay_inside_their_row():
    lines = table_lines([("task", "left"), ("metric", "left"), ("n", "right")],
                        [["a|b\n<script>x</script>", Code("acc|`x`<1>"), 3], ["ok", "m", None]])
    assert lines == ["| task | metric | n |", "|---|---|---:|",
                     "| a\\|b &lt;script&gt;x&lt;/script&gt; | `acc\\|ʼxʼ<1>` | 3 |",
                     "| ok | m |  |"]
