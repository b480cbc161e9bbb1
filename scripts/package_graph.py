"""The import graph of the code, read from the source (every ``import``, also inside functions):
packages, their dependencies, circles, private names imported across packages, module sizes.

    python scripts/package_graph.py                  # print the report
    python scripts/package_graph.py --write          # regenerate the graph in docs/architecture.md

A *unit* is a module's package (``server/incidents/tracker.py`` → ``server.incidents``), except
that a module directly in a top-level package is a unit of its own (``server/settings.py`` →
``server.settings``): the top-level packages are deployables, not rooms. tests/ and
benchmarks/ are not part of the graph: they may reach anywhere.

Used by tests/test_architecture.py, which keeps docs/architecture.md from drifting and holds the
layout to its rules (issue 14).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("protocol", "transport", "agent", "client", "certs", "server", "simulators", "fleetcare")
DOC = ROOT / "docs" / "architecture.md"
BEGIN = "<!-- BEGIN package graph (scripts/package_graph.py --write) -->"
END = "<!-- END package graph -->"
MAX_MODULE_LINES = 600


@dataclass(frozen=True, slots=True)
class Import:
    source: str  # importing module
    target: str  # imported module (resolved to a module of ours)
    names: tuple[str, ...]  # names taken from it (``from x import a, b``)
    line: int


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)

    def unit(self, module: str) -> str:
        parts = module.split(".")
        path = self.modules[module]
        if path.name == "__init__.py":
            return module  # a package's own __init__ is the package
        return ".".join(parts[:-1]) if len(parts) > 2 else module

    def edges(self) -> dict[str, set[str]]:
        result: dict[str, set[str]] = defaultdict(set)
        for imp in self.imports:
            a, b = self.unit(imp.source), self.unit(imp.target)
            if a != b and not _inside(a, b):
                result[a].add(b)
        return result

    def module_edges(self) -> dict[str, set[str]]:
        result: dict[str, set[str]] = defaultdict(set)
        for imp in self.imports:
            if imp.source != imp.target:
                result[imp.source].add(imp.target)
        return result

    def private_imports(self) -> list[Import]:
        """``from a.b import _name`` where a.b is in another unit (or ``import`` of ``_module``)."""
        found = []
        for imp in self.imports:
            if self.unit(imp.source) == self.unit(imp.target):
                continue
            private_module = any(_private(p) for p in imp.target.split("."))
            if private_module or any(_private(n) for n in imp.names):
                found.append(imp)
        return found

    def sizes(self) -> dict[str, int]:
        return {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in self.modules.items()}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _inside(a: str, b: str) -> bool:
    """A package's __init__ importing its own submodules (or a submodule its package) is not a
    dependency between rooms."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(graph: Graph, name: str) -> str | None:
    """The module of ours that ``name`` is, or the closest enclosing one (``a.b.func`` → ``a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in graph.modules:
            return candidate
        parts.pop()
    return None


def _walk_imports(graph: Graph, module: str, tree: ast.AST) -> Iterator[Import]:
    is_package = graph.modules[module].name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(graph, alias.name)
                if target is not None:
                    yield Import(module, target, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            for alias in node.names:
                # ``from pkg import submodule`` imports the submodule
                target = _resolve(graph, f"{name}.{alias.name}")
                if target is not None and target != _resolve(graph, name):
                    yield Import(module, target, (), node.lineno)
                    continue
                target = _resolve(graph, name)
                if target is not None:
                    yield Import(module, target, (alias.name,), node.lineno)


def build(root: Path = ROOT) -> Graph:
    graph = Graph()
    for top in TOP_LEVEL:
        for path in sorted((root / top).rglob("*.py")):
            if "migrations" in path.parts and "versions" in path.parts:
                continue  # Alembic revisions: data, not code
            graph.modules[_module_name(path)] = path
    for module, path in graph.modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph.imports.extend(_walk_imports(graph, module, tree))
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(set(edges) | {s for targets in edges.values() for s in targets}):
        if node not in index:
            visit(node)
    return sorted(found)


def layers(edges: dict[str, set[str]], units: Iterable[str]) -> list[list[str]]:
    """Units by depth: layer 0 imports nothing of ours, layer n only layers below (units in a
    circle share the layer of the circle)."""
    depth: dict[str, int] = {}
    in_cycle = {u for c in cycles(edges) for u in c}

    def level(unit: str, seen: frozenset[str]) -> int:
        if unit in depth:
            return depth[unit]
        deps = [d for d in edges.get(unit, ()) if d not in seen]
        value = 0 if not deps else 1 + max(level(d, seen | {unit}) for d in deps)
        if unit not in in_cycle:
            depth[unit] = value
        return value

    by_level: dict[int, list[str]] = defaultdict(list)
    for unit in sorted(set(units)):
        by_level[level(unit, frozenset())].append(unit)
    return [by_level[k] for k in sorted(by_level)]


def render(graph: Graph) -> str:
    """The generated part of docs/architecture.md: layers and each unit's dependencies."""
    edges = graph.edges()
    units = {graph.unit(m) for m in graph.modules}
    lines = [
        BEGIN,
        "",
        "Each unit (a package, or a module directly in a top-level package) with the units it",
        "imports. Layer 0 imports nothing of ours; each layer only imports layers below it.",
        "",
    ]
    for depth, layer in enumerate(layers(edges, units)):
        lines.append(f"**Layer {depth}**")
        lines.append("")
        for unit in layer:
            deps = ", ".join(f"`{d}`" for d in sorted(edges.get(unit, ()))) or "—"
            lines.append(f"- `{unit}` → {deps}")
        lines.append("")
    found = cycles(edges)
    lines.append(f"Circles between units: {len(found)}.")
    for component in found:
        lines.append(f"- {' ↔ '.join(f'`{u}`' for u in component)}")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(graph: Graph, doc: Path = DOC) -> bool:
    """Replace the generated part of ``doc``; True if it changed."""
    text = doc.read_text(encoding="utf-8")
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + render(graph) + text[stop:]
    if new != text:
        doc.write_text(new, encoding="utf-8")
        return True
    return False


def generated_part(doc: Path = DOC) -> str:
    text = doc.read_text(encoding="utf-8")
    return text[text.index(BEGIN) : text.index(END) + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate the graph in docs/architecture.md")
    args = parser.parse_args(argv)
    graph = build()
    if args.write:
        print("docs/architecture.md " + ("updated" if write_doc(graph) else "already up to date"))
        return 0
    print(render(graph))
    module_cycles = cycles(graph.module_edges())
    print(f"\ncircles between modules: {len(module_cycles)}")
    for component in module_cycles:
        print("  " + " ↔ ".join(component))
    private = graph.private_imports()
    print(f"private names imported across units: {len(private)}")
    for imp in private:
        print(f"  {imp.source}:{imp.line} takes {', '.join(imp.names) or imp.target} from {imp.target}")
    big = {m: n for m, n in graph.sizes().items() if n > MAX_MODULE_LINES}
    print(f"modules over {MAX_MODULE_LINES} lines: {len(big)}")
    for module, count in sorted(big.items(), key=lambda kv: -kv[1]):
        print(f"  {module}: {count}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
