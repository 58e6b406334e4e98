"""The plugin documentation covers the whole plugin surface (after datasette's
test_plugin_hooks_are_documented): a hook or an interface member that docs/plugins.md never
mentions fails the suite."""

import inspect
import re
from pathlib import Path

import pytest

from harness import api, hookspecs

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
INTERFACES = [api.ModelFamily, api.Dataset, api.Structure, api.Criterion, api.Similarity, api.Method,
              api.Evaluator, api.Step, api.Candidate, api.EvalContext, api.CriterionContext, api.DataSplits,
              api.Option, api.Unit, api.ResidualBlockNetwork, api.ChannelWidthNetwork]


def hooks():
    return sorted(n for n, f in vars(hookspecs).items() if callable(f) and n.startswith("register_"))


def members(cls):
    names = set(getattr(cls, "__dataclass_fields__", {}))
    for name, value in vars(cls).items():
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, (property, staticmethod))):
            names.add(name)
    return sorted(names)


@pytest.mark.parametrize("hook", hooks())
def test_every_hook_is_documented(hook):
    assert f"`{hook}()`" in DOCS, f"docs/plugins.md does not document the hook {hook}"


def test_every_hook_has_a_docstring():
    assert all(getattr(hookspecs, h).__doc__ for h in hooks())


@pytest.mark.parametrize("cls, member", [(c, m) for c in INTERFACES for m in members(c)],
                         ids=lambda v: v.__name__ if isinstance(v, type) else v)
def test_every_interface_member_is_documented(cls, member):
    # in code spans only: `member`, `member(...)`, `Class.member` or a signature that lists it
    assert re.search(rf"`[^`\n]*\b{re.escape(member)}\b[^`\n]*`", DOCS), \
        f"docs/plugins.md never mentions {cls.__name__}.{member}"


PUBLIC = {"harness", "harness.api", "harness.errors", "harness.export", "harness.surgery", "harness.testing",
          "harness.traced"}


def plugin_sources():
    root = Path(__file__).resolve().parents[1]
    yield from sorted((root / "plugins").rglob("*.py"))
    yield from sorted((root / "examples" / "harness-example-plugins" / "harness_example_plugins").rglob("*.py"))


@pytest.mark.parametrize("path", list(plugin_sources()), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_plugins_import_only_the_public_api(path):
    import ast

    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names if a.name.split(".")[0] == "harness"}
    assert imported <= PUBLIC, f"{path} imports {sorted(imported - PUBLIC)}: not the public API"


def test_every_helper_for_plugins_is_documented():
    helpers = [n for n, f in vars(api).items() if inspect.isfunction(f) and f.__module__ == api.__name__
               and not n.startswith("_")]
    assert {"derive_seed", "normalize", "accuracy", "progress"} <= set(helpers)
    for name in helpers:
        assert f"`{name}(" in DOCS, f"docs/plugins.md does not document harness.api.{name}"
