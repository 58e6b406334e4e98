"""The shape of the core at git revisions (issue 25's before/after figures), read with
``git show REV:path`` (no checkout):

- the modules of harness/ over 400 lines, with their lengths;
- the import statements inside a function (or lambda) or under ``if TYPE_CHECKING:`` in
  harness/ outside cli.py, and how many of them import a module of harness/;
- the largest strongly connected set of the harness/ import graph, counting every import
  statement wherever it is (module level, in a function, under TYPE_CHECKING).

The graph is built as tests/test_architecture.py builds it: ``from harness import records``
imports harness.records, ``from harness.api import Unit`` imports harness.api.

    python benchmarks/architecture_figures.py 649d43a HEAD      # a Markdown table
    python benchmarks/architecture_figures.py HEAD --details    # and what each figure counts
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys

MAX_LINES = 400


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def sources(rev: str) -> dict[str, tuple[str, str]]:
    """module name -> (path, source) of every .py file under harness/ at ``rev``."""
    found = {}
    for path in git("ls-tree", "-r", "--name-only", rev, "--", "harness").split():
        if path.endswith(".py"):
            parts = path[:-3].split("/")
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = (path, git("show", f"{rev}:{path}"))
    return found


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.AST):
    """(import node, whether it is inside a function or under TYPE_CHECKING) for every import."""
    def walk(node, hidden):
        for child in ast.iter_child_nodes(node):
            inner = hidden or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(node, ast.If) and is_type_checking(node.test) and child in node.body:
                inner = True
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, inner
            yield from walk(child, inner)
    yield from walk(tree, False)


def targets(node, name: str, path: str, modules) -> set[str]:
    """The modules of harness/ an import statement imports."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    if isinstance(node, ast.Import):
        raw = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        raw = {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    found = set()
    for target in raw:
        while target not in modules and "." in target:
            target = target.rpartition(".")[0]
        if target in modules and target != name:
            found.add(target)
    return found


def largest_component(edges: dict[str, set[str]]) -> list[str]:
    """The largest strongly connected set (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, best = {}, {}, [], set(), []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                members = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    members.append(w)
                    if w == v:
                        break
                if len(members) > len(best):
                    best = sorted(members)
    return best


def figures(rev: str) -> dict:
    modules = sources(rev)
    long = {path: len(src.splitlines()) for path, src in modules.values() if len(src.splitlines()) > MAX_LINES}
    edges, hidden, hidden_core = {}, [], []
    for name, (path, src) in modules.items():
        edges[name] = set()
        for node, inner in imports(ast.parse(src)):
            found = targets(node, name, path, modules)
            edges[name] |= found
            if inner and path != "harness/cli.py":
                hidden.append(f"{path}:{node.lineno}")
                if found or any(a.name.startswith("harness") for a in node.names) \
                        or (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("harness"))):
                    hidden_core.append(f"{path}:{node.lineno}")
    knot = largest_component(edges)
    packages = [m for m in knot if modules[m][0].endswith("__init__.py")]
    return {"packages": packages, "rev": rev, "commit": git("rev-parse", "--short", rev).strip(), "modules": len(modules),
            "long": long, "hidden": hidden, "hidden_core": hidden_core,
            "knot": knot if len(knot) > 1 else []}


def table(results: list[dict]) -> str:
    head = "| | " + " | ".join(f"{r['rev']} ({r['commit']})" for r in results) + " |"
    rows = [head, "|---" * (len(results) + 1) + "|"]

    def row(label, cell):
        rows.append(f"| {label} | " + " | ".join(cell(r) for r in results) + " |")

    row("modules of harness/", lambda r: str(r["modules"]))
    row(f"modules over {MAX_LINES} lines", lambda r: str(len(r["long"])) + (
        " (" + ", ".join(f"{p.removeprefix('harness/')} {n}" for p, n in sorted(r["long"].items(), key=lambda x: -x[1])) + ")"
        if r["long"] else ""))
    row("imports in functions or TYPE_CHECKING (outside cli.py)", lambda r: str(len(r["hidden"])))
    row("... of which import harness modules", lambda r: str(len(r["hidden_core"])))
    row("largest import cycle (strongly connected modules, all imports)", lambda r: str(len(r["knot"])) + (
        f" ({len(r['knot']) - len(r['packages'])} modules and {len(r['packages'])} package __init__)"
        if r["packages"] else ""))
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revs", nargs="*", default=["649d43a", "HEAD"])
    parser.add_argument("--details", action="store_true", help="list what each figure counts")
    args = parser.parse_args(argv)
    results = [figures(rev) for rev in args.revs]
    print(table(results))
    if args.details:
        for r in results:
            print(f"\n## {r['rev']} ({r['commit']})\n")
            print("largest strongly connected set:", ", ".join(r["knot"]) or "none")
            print("imports in functions or TYPE_CHECKING (outside cli.py):")
            for place in r["hidden"]:
                print(f"  {place}" + ("  (harness)" if place in r["hidden_core"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
