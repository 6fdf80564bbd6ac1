"""The package layout (STYLE "Layout"): no import cycle between folders, and arrows that
point down: spec areas never import their drivers, transport folders import no area.

A folder is the first name below ``stubserver`` (``stubserver/cache.py`` is the folder
``cache``). Imports are read with ``ast``, so nothing is imported to check them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "stubserver"

#: Spec areas, and what they never import: the control API, the commands, the composition
#: of run and the public testing library all sit above them.
AREAS = frozenset({"rooms", "server_keys", "discovery", "auth"})
ABOVE_AREAS = frozenset({"control", "cli", "app", "testing"})
#: The transport folders every area shares, and the areas (and what sits above them)
#: they never import.
TRANSPORT = frozenset({"client", "server"})
NOT_BELOW_TRANSPORT = frozenset(
    {"discovery", "server_keys", "auth", "rooms", "tls", "outbound", "check", "conformance"}
    | ABOVE_AREAS
    | {"devtools"}
)
#: Entry points: the library for tests and the demo's tools never import the commands.
NOT_IMPORTING_CLI = frozenset({"testing", "devtools"})


def folder_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def imported_folders(node: ast.AST) -> Iterator[str]:
    """The stubserver folders one import statement names."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [node.module]
    for name in names:
        parts = name.split(".")
        if parts[0] == "stubserver" and len(parts) > 1:
            yield parts[1]


def is_type_checking_block(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def module_trees() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield folder_of(path), path, ast.parse(path.read_text(encoding="utf-8"))


def top_level_edges() -> dict[str, set[str]]:
    """Folder -> folders it imports when loaded (module top level, ``TYPE_CHECKING`` blocks
    left out: they are not run)."""
    edges: dict[str, set[str]] = {}
    for folder, _, tree in module_trees():
        for statement in tree.body:
            if is_type_checking_block(statement):
                continue
            for other in imported_folders(statement):
                if other != folder:
                    edges.setdefault(folder, set()).add(other)
    return edges


def every_import() -> Iterator[tuple[str, str, Path]]:
    """``(folder, imported folder, file)`` for every import anywhere in a module: top level,
    inside functions (lazy imports) and under ``TYPE_CHECKING``."""
    for folder, path, tree in module_trees():
        for node in ast.walk(tree):
            for other in imported_folders(node):
                if other != folder:
                    yield folder, other, path


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of ``edges`` with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_package() -> None:
    """The walk reads the real tree: rooms/ and outbound/ are there, and outbound/ imports
    discovery/ (a test of the rules below that read nothing would pass)."""
    edges = top_level_edges()
    assert {"rooms", "outbound", "app"} <= set(edges)
    assert "discovery" in edges["outbound"]


def test_cycle_finder_finds_a_cycle() -> None:
    """The cycle finder reports a two-folder cycle and leaves a chain alone."""
    assert strongly_connected({"a": {"b"}, "b": {"a", "c"}, "c": set()}) == [{"a", "b"}]
    assert strongly_connected({"a": {"b"}, "b": {"c"}}) == []


def test_no_import_cycle_between_folders() -> None:
    """No two folders of stubserver/ import each other, directly or through others."""
    assert strongly_connected(top_level_edges()) == []


def test_spec_areas_never_import_their_drivers() -> None:
    """rooms/, server_keys/, discovery/ and auth/ import nothing from control/, cli/, app/
    or testing/, not even lazily or for types."""
    upward = sorted(
        f"{path.relative_to(PACKAGE)} imports {other}/"
        for folder, other, path in every_import()
        if folder in AREAS and other in ABOVE_AREAS
    )
    assert upward == []


def test_transport_folders_import_no_area() -> None:
    """client/ and server/ hold only what every area shares: they import no spec area and
    nothing that sits above one (outbound/, app/, control/, ...)."""
    upward = sorted(
        f"{path.relative_to(PACKAGE)} imports {other}/"
        for folder, other, path in every_import()
        if folder in TRANSPORT and other in NOT_BELOW_TRANSPORT
    )
    assert upward == []


def test_testing_and_devtools_never_import_the_commands() -> None:
    """stubserver.testing and devtools/ import nothing from cli/."""
    upward = sorted(
        f"{path.relative_to(PACKAGE)} imports cli/"
        for folder, other, path in every_import()
        if folder in NOT_IMPORTING_CLI and other == "cli"
    )
    assert upward == []
