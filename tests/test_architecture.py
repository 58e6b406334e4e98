"""The shape of the core (issue 25): no import cycle among the modules of harness/, counting
the imports inside functions and under ``if TYPE_CHECKING:`` (a cycle hidden in a function
is still a cycle: the modules cannot be understood, or changed, one at a time); no module
over 400 lines; and a core that never imports its own built-in plugins."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "harness"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """The modules ``name`` imports, wherever the import statement is (module level, inside a
    function, under TYPE_CHECKING): ``from harness import records`` imports harness.records,
    ``from harness.api import Unit`` imports harness.api."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        targets = set()
        for target in imported(name, path):
            while target not in MODULES and "." in target:  # harness.api.Unit -> harness.api
                target = target.rpartition(".")[0]
            if target in MODULES and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each as a closed path."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                found.append(path_through(edges, set(members)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def path_through(edges, members: set[str]) -> list[str]:
    """One cycle inside a strongly connected set, for the failure message."""
    start = min(members)
    path, seen = [start], {start}
    while True:
        nxt = min(w for w in edges[path[-1]] if w in members)
        if nxt in seen:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)
        seen.add(nxt)


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    source = "def f():\n    from harness import records\n"
    tree_names = {n.names[0].name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert tree_names == {"records"}


def test_no_import_cycle_among_the_core_modules():
    found = cycles(graph())
    assert not found, "import cycles (function-local imports included): " + "; ".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_core_module_is_over_400_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines; split it along a seam"


def test_the_core_never_imports_its_built_in_plugins():
    """The built-ins are registered like any outside package's; the core stands without them."""
    offenders = {name for name, path in MODULES.items()
                 if any(t.split(".")[0] == "harness_plugins" for t in imported(name, path))}
    assert not offenders, f"{sorted(offenders)} import harness_plugins"


def test_the_keys_two_machines_record_differently_are_listed_once():
    """A new measurement of time or memory in the iteration records is a field of
    harness.schema and a key of MACHINE_KEYS, not also a list in every test or script that
    compares two runs' records (benchmarks/ray_two_nodes.py's copy had missed phase_s)."""
    from harness import schema

    row = {"iteration": 1, "accuracy": 50.0, "wall_time_s": 3.0, "phase_s": {"finetune": 2.0}}
    assert schema.reproducible(row) == {"iteration": 1, "accuracy": 50.0}
    assert set(schema.MACHINE_KEYS) <= set(schema.Iteration.__annotations__)
    listed = ", ".join(f'"{key}"' for key in schema.MACHINE_KEYS)  # as a copy would write them
    copies = [p.relative_to(ROOT) for folder in ("harness", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py")
              if listed in p.read_text()]
    assert copies == [Path("harness/schema.py")], f"{copies} list the machine's keys again: use harness.schema.reproducible"
