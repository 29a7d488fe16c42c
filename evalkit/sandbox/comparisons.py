"""Static check for a trick no in-process check can see: comparisons that always agree.

A solution that returns an object whose ``__eq__`` answers True to anything passes
``assert f(x) == expected`` without computing anything. The runner cannot tell such an object
from an honest result, so the program's source is read instead: a class defined in it whose
``__eq__`` or ``__ne__`` just returns a constant is flagged (the program gets ``tampered``).
Comparisons that compute something are left alone; see the README for what this cannot catch.
"""

from __future__ import annotations

import ast

_METHODS = ("__eq__", "__ne__")


def constant_comparisons(source: str) -> list[str]:
    """Evidence lines, one per class in ``source`` whose __eq__/__ne__ returns a constant."""
    if not any(name in source for name in _METHODS):  # the common case, without parsing
        return []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []  # it will not run either; the sandbox says why
    found = []
    for cls in ast.walk(tree):
        if not isinstance(cls, ast.ClassDef):
            continue
        for stmt in cls.body:
            method, value = _comparison(stmt)
            if method and _constant(value):
                found.append(f"class {cls.name} defines {method} returning a constant "
                             f"(line {stmt.lineno}): it compares equal to anything")
    return found


def _comparison(stmt: ast.stmt) -> tuple[str | None, ast.expr | None]:
    """(method name, what it returns) for ``def __eq__: return X`` and ``__eq__ = lambda: X``."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name in _METHODS:
        body = [s for s in stmt.body if not _docstring(s) and not isinstance(s, ast.Pass)]
        if len(body) == 1 and isinstance(body[0], ast.Return):
            return stmt.name, body[0].value
    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Lambda):
        for target in stmt.targets:
            if isinstance(target, ast.Name) and target.id in _METHODS:
                return target.id, stmt.value.body
    return None, None


def _constant(value: ast.expr | None) -> bool:
    return isinstance(value, ast.Constant) and value.value is not None


def _docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
