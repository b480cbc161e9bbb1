"""The layout keeps its rules (docs/architecture.md, issue 14): the documented package graph is
the code's, and no new circle, private cross-unit import or oversized module appears.

The KNOWN_* sets are the debts the layout redesign (issue 14) pays off: they may only shrink.
An entry that no longer exists fails the test too, so the list is kept honest.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("package_graph", ROOT / "scripts" / "package_graph.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("package_graph", module)
    spec.loader.exec_module(module)
    return module


tool = _tool()
GRAPH = tool.build()

KNOWN_CIRCLES: set[tuple[str, ...]] = set()  # none left: keep it so
KNOWN_PRIVATE: set[tuple[str, str]] = set()  # none left: keep it so
KNOWN_LARGE: set[str] = set()  # none left: keep it so


def test_the_documented_graph_is_the_codes() -> None:
    assert tool.generated_part() == tool.render(GRAPH), (
        "docs/architecture.md is out of date: run `python scripts/package_graph.py --write`"
    )


def test_no_new_circle_between_units() -> None:
    found = {tuple(c) for c in tool.cycles(GRAPH.edges())}
    assert not found - KNOWN_CIRCLES, f"new import circle(s): {sorted(found - KNOWN_CIRCLES)}"
    assert not KNOWN_CIRCLES - found, f"circle(s) gone: remove from KNOWN_CIRCLES: {KNOWN_CIRCLES - found}"


def test_no_new_private_name_imported_across_units() -> None:
    found = {(imp.source, name) for imp in GRAPH.private_imports() for name in imp.names or (imp.target,)}
    assert not found - KNOWN_PRIVATE, f"private names imported across units: {sorted(found - KNOWN_PRIVATE)}"
    assert not KNOWN_PRIVATE - found, f"fixed: remove from KNOWN_PRIVATE: {KNOWN_PRIVATE - found}"


def test_no_new_module_over_the_size_limit() -> None:
    large = {m for m, n in GRAPH.sizes().items() if n > tool.MAX_MODULE_LINES}
    assert not large - KNOWN_LARGE, (
        f"modules over {tool.MAX_MODULE_LINES} lines: {sorted(large - KNOWN_LARGE)}"
    )
    assert not KNOWN_LARGE - large, f"now small enough: remove from KNOWN_LARGE: {KNOWN_LARGE - large}"


def test_the_tool_sees_a_circle_it_is_shown() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert tool.cycles(edges) == [["a", "b", "c"]]


def test_the_server_never_imports_the_agent() -> None:
    """Code in the wrong deployable (issue 14, item 6): what both need lives in protocol/ (the
    contract) or transport/ (link helpers)."""
    wrong = sorted(
        f"{imp.source}:{imp.line} → {imp.target}"
        for imp in GRAPH.imports
        if imp.source.startswith("server") and imp.target.startswith("agent")
    )
    assert not wrong, wrong
