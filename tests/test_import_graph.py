"""The modules of ``unlearnkit/`` import each other without cycles, counting imports inside functions too: each
part of the package can be read (and changed) knowing only what it imports (docs/architecture.md, package map)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unlearnkit"


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the package's modules it imports (``import a.b``, ``from a import b`` where ``b`` is a module,
    ``from a.b import name``), anywhere in the file."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            for target in targets:
                while target and target not in files:  # ``import a.b.c`` of a name: its module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_function_level_imports_and_finds_a_cycle(tmp_path):
    """The checker itself: a cycle made only by an import inside a function is found."""
    package = tmp_path / "unlearnkit"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "data" / "sources.py").write_text("def open_source():\n    import unlearnkit.data.formats\n")
    (package / "data" / "formats.py").write_text("from unlearnkit.data.sources import open_source\n")
    (package / "report.py").write_text("from .data import sources\n")
    graph = import_graph(package)
    assert graph["unlearnkit.report"] == {"unlearnkit.data.sources"}
    assert cycles(graph) == [["unlearnkit.data.formats", "unlearnkit.data.sources"]]


def test_unlearnkit_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and graph["unlearnkit.methods.base"], "the package was not read"
    found = cycles(graph)
    assert not found, "import cycles (module-level or inside functions): " + "; ".join(" ↔ ".join(c) for c in found)
