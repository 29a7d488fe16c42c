"""The package's shape: imports run one way (no cycles) and modules stay readable in size."""

from __future__ import annotations

import ast
from pathlib import Path

import evalkit

ROOT = Path(evalkit.__file__).parent
KNOWN_CYCLES: list[set[str]] = []  # none left: the sandbox base<->selftest cycle is gone
MAX_LINES = 400
SIZE_REASON = "# size:"  # a module over MAX_LINES says why near its top


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Every evalkit module ``tree`` imports, at the top or inside functions (a lazy import is
    still a dependency), except under ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".rstrip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8")), name,
                           path.name == "__init__.py", known)
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_lazy_imports():
    graph = import_graph()
    # compare.orchestrate imports the runner inside a function (heavy imports stay lazy).
    assert "evalkit.run.runner" in graph["evalkit.compare.orchestrate"]


def test_evalkit_has_no_import_cycles():
    found = [c for c in cycles(import_graph()) if c not in KNOWN_CYCLES]
    assert not found, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


LAYERS = ["evalkit.cli", ("evalkit.compare", "evalkit.report"), "evalkit.run"]


def test_lower_layers_never_import_the_cli_or_the_layers_above():
    graph = import_graph()
    for name, deps in graph.items():
        if not name.startswith(("evalkit.cli", "evalkit.__main__")):
            assert not any(d.startswith("evalkit.cli") for d in deps), f"{name} imports the CLI"
        if name.startswith("evalkit.run"):
            bad = [d for d in deps if d.startswith(("evalkit.compare", "evalkit.report"))]
            assert not bad, f"{name} (run) imports {bad} (compare/report are above run)"
        if name.startswith(("evalkit.tasks", "evalkit.scoring", "evalkit.models",
                            "evalkit.sandbox")):
            bad = [d for d in deps if d.startswith(("evalkit.run", "evalkit.compare"))]
            assert not bad, f"{name} imports {bad} (run/compare are above it)"


def test_long_modules_say_why():
    long = []
    for name, path in _modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and not any(SIZE_REASON in line for line in lines[:40]):
            long.append(f"{name} ({len(lines)} lines)")
    assert not long, f"modules over {MAX_LINES} lines without a '{SIZE_REASON}' reason: {long}"
