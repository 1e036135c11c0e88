"""The package's layout holds: no import circle between modules, and the public surface stays one screen."""

from __future__ import annotations

import ast
from pathlib import Path

import asupermachine

PACKAGE = Path(asupermachine.__file__).parent
PUBLIC_SCREEN = 80
"""At most this many names re-exported from ``asupermachine``."""


def module_name(path: Path) -> str:
    parts = ["asupermachine", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """The asupermachine modules ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks aside)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {target for target in runtime_imports(path) if target in modules and target != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    return found


def test_the_circle_finder_finds_circles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()
    # A package's __init__ importing its own modules is not a circle of layers.
    for name in graph:
        graph[name] = {
            target for target in graph[name] if not name.startswith(target + ".") or target == "asupermachine"
        }
    graph["asupermachine"] = set()  # the re-exports sit on top of everything
    assert cycles(graph) == []


def test_the_image_layer_does_not_reach_up_into_machines() -> None:
    graph = import_graph()
    image_modules = [name for name in graph if name.startswith("asupermachine.image")]
    upward = {"asupermachine._machine", "asupermachine._runtime", "asupermachine._bake", "asupermachine._pool"}
    assert {name: graph[name] & upward for name in image_modules if graph[name] & upward} == {}


def test_the_public_surface_is_one_screen_and_every_error_is_exported() -> None:
    names = [name for name in vars(asupermachine) if not name.startswith("_") and name[0].isupper()]
    assert len(names) <= PUBLIC_SCREEN
    errors = {name for name, value in vars(asupermachine._errors).items()
              if isinstance(value, type) and issubclass(value, Exception)}
    assert errors <= set(names)
