"""The package's layering, read from its source with `ast`: every import inside orchestrator/
(at module level or inside a function) goes down the layers of orchestrator/README.md, no module
takes part in an import cycle, and only distributed/ imports Ray."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"

# Bottom to top: a room may import its own modules and the rooms before it, never one after it.
LAYERS = [
    "errors",
    "atomic",
    "objectives",
    "config",
    "data",
    "model",
    "rewards",
    "algorithms",
    "evaluation",
    "serving",
    "training",
    "distributed",
    "recipes",
    "cli",
]
RANK = {room: rank for rank, room in enumerate(LAYERS)}
RAY_ROOMS = {"distributed"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The modules `path` imports: every `import` and `from … import` anywhere in the file, each
    resolved to the module it names (`from orchestrator.data import schema` names
    orchestrator.data.schema)."""
    found = set()
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(
                f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known
            )
    return found


def graph() -> dict[str, set[str]]:
    """Module → the orchestrator modules it imports (a package's __init__ stands for it)."""
    paths = modules()
    known = set(paths)
    return {
        name: {other for other in imported(path, known) if other in known and other != name}
        for name, path in paths.items()
    }


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "package"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node, or one that imports itself
    (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_takes_part_in_an_import_cycle():
    assert cycles(graph()) == []


def test_every_module_sits_in_a_known_layer():
    rooms = {room(name) for name in modules()} - {"package"}
    assert rooms <= set(LAYERS), f"place {sorted(rooms - set(LAYERS))} in LAYERS and the README"


def test_imports_only_go_down_the_layers():
    upward = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        for target in targets
        if room(source) != "package"
        and room(target) != "package"
        and RANK[room(target)] > RANK[room(source)]
    ]
    assert upward == []


def test_only_distributed_imports_ray():
    offenders = [
        name
        for name, path in modules().items()
        if room(name) not in RAY_ROOMS
        and any(m == "ray" or m.startswith("ray.") for m in imported(path, set()))
    ]
    assert offenders == []


@pytest.mark.parametrize("layer", [name for name in LAYERS if (PACKAGE / name).is_dir()])
def test_each_folder_says_what_it_owns(layer):
    init = PACKAGE / layer / "__init__.py"
    assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), layer
