"""The plugin documentation holds the whole plugin surface, each hook and member with its
signature (after datasette's test_plugin_hooks_are_documented and
test_plugin_hooks_have_correct_signatures): a hook or an interface member that
docs/plugins.md leaves out, writes with another signature, or documents though the code has
no such member fails the suite. The README's option table is held to the settings table."""

import ast
import inspect
import re
from pathlib import Path

import pytest

from harness import api, hookspecs, registry
from harness.kinds import KINDS
from harness.settings import BENCH_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "plugins.md").read_text()
README = (ROOT / "README.md").read_text()
EMPTY = inspect.Parameter.empty
# the interface of every kind (from the table of kinds), what every plugin has, and what the harness hands plugins
INTERFACES = [api.Plugin, *(getattr(api, kind.interface) for kind in KINDS), api.Step, api.Candidate,
              api.EvalContext, api.CriterionContext, api.DataSplits, api.TensorSplit, api.Option, api.Unit,
              api.ResidualBlockNetwork, api.ChannelWidthNetwork]


def signature(name: str, function, bound: bool = True) -> str:
    """``name(params) -> return`` as the docs write it: no annotations, no ``self``."""
    sig = inspect.signature(function)
    params = list(sig.parameters.values())[1 if bound else 0:]
    text = name + str(inspect.Signature([p.replace(annotation=EMPTY) for p in params]))
    return text if sig.return_annotation is EMPTY else f"{text} -> {sig.return_annotation}"


def members(cls) -> dict[str, str]:
    """The class's own public members, each as the docs must write it: a method with its
    signature, an attribute or field by its name."""
    found = {}
    for name in cls.__dict__.get("__annotations__", {}):
        if not name.startswith("_"):
            found[name] = name
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(value, property):
            found[name] = name
        elif isinstance(value, staticmethod):
            found[name] = signature(name, value.__func__, bound=False)
        elif inspect.isfunction(value):
            found[name] = signature(name, value)
    return found


def section(cls) -> str:
    """The part of the page about ``cls``: from the heading that names it to the next heading."""
    match = re.search(rf"^###[^\n]*`{cls.__name__}`[^\n]*\n(.*?)(?=^##)", DOCS + "\n##", re.S | re.M)
    assert match, f"docs/plugins.md has no section (### ... `{cls.__name__}` ...) for {cls.__name__}"
    return match.group(1)


def documented(cls) -> list[str]:
    """The names the first column of the section's tables documents."""
    rows = [line.split("|")[1] for line in section(cls).splitlines() if line.startswith("| `")]
    return [re.split(r"[(: ]", span)[0] for row in rows for span in re.findall(r"`([^`]+)`", row)]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.hook)
def test_every_hook_is_documented_with_its_signature_and_interface(kind):
    hook = getattr(hookspecs, kind.hook)
    assert hook.__doc__ and signature(kind.hook, hook, bound=False) == f"{kind.hook}()"
    assert f"### `{kind.hook}()` -> `{kind.interface}`" in DOCS, f"docs/plugins.md has no section for {kind.hook}"


@pytest.mark.parametrize("cls, member, written", [(c, m, w) for c in INTERFACES for m, w in members(c).items()],
                         ids=lambda v: v.__name__ if isinstance(v, type) else v)
def test_every_interface_member_is_documented_with_its_signature(cls, member, written):
    assert f"`{written}`" in section(cls), f"docs/plugins.md does not write {cls.__name__}.{member} as `{written}`"


@pytest.mark.parametrize("cls", INTERFACES, ids=lambda c: c.__name__)
def test_the_docs_document_no_member_the_code_lacks(cls):
    known = {name for klass in cls.__mro__ for name in members(klass)}
    stale = [name for name in documented(cls) if name not in known]
    assert not stale, f"docs/plugins.md documents {cls.__name__}.{', '.join(stale)}, which the code does not have"


def test_every_helper_for_plugins_is_documented_with_its_signature():
    helpers = {n: f for n, f in vars(api).items() if inspect.isfunction(f) and f.__module__ == api.__name__
               and not n.startswith("_")}
    assert {"derive_seed", "normalize", "accuracy", "progress"} <= set(helpers)
    for name, function in helpers.items():
        written = signature(name, function, bound=False)
        assert f"`{written}`" in DOCS, f"docs/plugins.md does not document harness.api.{name} as `{written}`"


PUBLIC = {"harness", "harness.api", "harness.errors", "harness.export", "harness.surgery", "harness.testing",
          "harness.traced"}


def plugin_sources():
    yield from sorted((ROOT / "plugins").rglob("*.py"))
    yield from sorted((ROOT / "examples" / "harness-example-plugins" / "harness_example_plugins").rglob("*.py"))


@pytest.mark.parametrize("path", list(plugin_sources()), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_plugins_import_only_the_public_api(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names if a.name.split(".")[0] == "harness"}
    assert imported <= PUBLIC, f"{path} imports {sorted(imported - PUBLIC)}: not the public API"


def readme_options() -> list[tuple[str, str, str]]:
    """(flag, choices, default) of every row of the README's option table."""
    table = README.split("| option | choices (built in) | default |", 1)[1].split("\n\n", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table.splitlines()[2:]]
    return [(re.search(r"`(--[a-z-]+)`", row[0]).group(1), row[1], row[2]) for row in rows]


@pytest.mark.parametrize("flag, choices, default", readme_options(), ids=lambda v: v if v.startswith("--") else "")
def test_the_readme_option_table_follows_the_settings(flag, choices, default):
    """Each row is a setting; a setting with choices lists them in order; a plugin name listed
    is one a built-in plugin registers; a default written as a value is the setting's."""
    name = flag.removeprefix("--").removeprefix("no-").replace("-", "_")
    assert name in BENCH_SETTINGS, f"README.md documents {flag}, which is no setting of harness bench"
    setting = BENCH_SETTINGS[name]
    values = [v for v in re.findall(r"`([^`]+)`", choices) if not v.startswith("-")]
    if setting.choices:
        assert tuple(values) == setting.choices, f"README.md lists {values} for {flag}; the setting has {setting.choices}"
    kind = next((k for k in KINDS if k.setting == name and k.name != "model"), None)
    if kind:
        assert set(values) <= set(registry.registry(kind.name)), f"README.md lists no {kind.name} {values}"
    written = re.match(r"`([^`]+)`", default)
    if written and setting.default is not None and not isinstance(setting.default, bool):
        assert type(setting.default)(written.group(1)) == setting.default, f"README.md's default of {flag}"
