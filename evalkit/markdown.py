"""Markdown tables (PR comments, comparison.md, report.md): one jinja2 template and one cell
formatter, so every table escapes model-chosen text (task names, labels, ids) the same way."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import jinja2


class Code(str):
    """A cell shown as inline code (a metric's name)."""


def cell(value: Any) -> str:
    """One table cell: one line, a ``|`` cannot end the cell, and no raw HTML (GitHub renders
    HTML in comments); inline code keeps ``<`` as typed, since code spans show it literally."""
    text = "" if value is None else str(value)
    text = " ".join(text.splitlines()).replace("|", "\\|")
    if isinstance(value, Code):
        return "`" + text.replace("`", "ʼ") + "`"
    return html.escape(text, quote=False)


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
_ENV.filters["cell"] = cell
_TABLE = _ENV.from_string(
    "|{% for name, _ in columns %} {{ name | cell }} |{% endfor %}\n"
    "|{% for _, align in columns %}{{ '---:' if align == 'right' else '---' }}|{% endfor %}\n"
    "{% for row in rows %}"
    "|{% for value in row %} {{ value | cell }} |{% endfor %}\n"
    "{% endfor %}")


def table_lines(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A table's lines (header, rule, one per row); ``columns`` are (name, "left"/"right")."""
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row of {len(row)} cells for {len(columns)} columns")
    return _TABLE.render(columns=columns, rows=rows).splitlines()


def table(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> str:
    return "\n".join(table_lines(columns, rows))
