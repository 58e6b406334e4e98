"""The one plugin manager, registries of plugin objects by kind and name, and the plugin
objects of one run (:func:`for_run`): copies configured with that run's own options, whose
every call is guarded so that a failure names the plugin and its package.

Which entry points load can be narrowed, as pytest's ``-p no:NAME`` and
``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` do: ``HARNESS_BLOCK_PLUGINS`` (or ``harness --block``) lists
entry-point or package names not to load, and ``HARNESS_BUILTIN_PLUGINS_ONLY=1`` (or
``harness --builtin-only``) loads this package's own plugins only.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pluggy

from harness import hookspecs
from harness.errors import HarnessError, PluginError, first_line, unknown_name

ENTRY_POINT_GROUP = "harness"
BUILTIN_PACKAGE = "prunebench"
BLOCK_ENV = "HARNESS_BLOCK_PLUGINS"
BUILTIN_ONLY_ENV = "HARNESS_BUILTIN_PLUGINS_ONLY"

# kind -> the hook that returns that kind's plugin objects
KINDS = {
    "model": "register_models",
    "dataset": "register_datasets",
    "structure": "register_structures",
    "criterion": "register_criteria",
    "similarity": "register_similarities",
    "method": "register_methods",
    "evaluator": "register_evaluators",
}


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    package: str
    version: str
    obj: object


def blocked_names() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


def builtin_only() -> bool:
    return os.environ.get(BUILTIN_ONLY_ENV, "").lower() not in ("", "0", "false", "no")


def reload() -> None:
    """Forget the loaded plugins, so that the next lookup loads them again (after the
    blocking settings changed)."""
    get_plugin_manager.cache_clear()
    discovered_plugins.cache_clear()
    _PACKAGES.clear()


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    blocked, only_builtin = blocked_names(), builtin_only()
    # Entry points are loaded one by one so that a broken plugin is reported by name
    # and the others still load.
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        package = ep.dist.name if ep.dist else "?"
        if ep.name in blocked or package in blocked or (only_builtin and package != BUILTIN_PACKAGE):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a third-party plugin must not take the harness down
            print(f"harness: warning: plugin {ep.name!r} failed to load: {exc}", file=sys.stderr)
            continue
        if pm.is_registered(module):
            continue
        pm.register(module)
        _PACKAGES[id(module)] = (ep.dist.name, ep.dist.version) if ep.dist else ("?", "?")
    return pm


# id(plugin module) -> (distribution name, version), for `harness plugins` and clashes
_PACKAGES: dict[int, tuple[str, str]] = {}


def _package_of(pm, plugin) -> tuple[str, str]:
    return _PACKAGES.get(id(plugin), ("?", "?"))


# plugin objects added for a while in this process (``harness.prune``'s model and data):
# the discovered plugins keep their objects, which tests and configured runs hold on to
_TEMPORARY: list[PluginInfo] = []


@contextlib.contextmanager
def temporarily_registered(kind: str, obj, package: str):
    """``obj`` a plugin of that kind for the length of a ``with``."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}")
    if any(p.kind == kind and p.name == obj.name for p in all_plugins()):
        raise HarnessError(f"{kind} {obj.name!r} is registered already")
    info = PluginInfo(kind, obj.name, package, "", obj)
    _TEMPORARY.append(info)
    try:
        yield obj
    finally:
        _TEMPORARY.remove(info)


def all_plugins() -> tuple[PluginInfo, ...]:
    """Every plugin object: those the entry points register (loaded once) and the temporary ones."""
    return discovered_plugins() + tuple(_TEMPORARY)


@functools.lru_cache(maxsize=None)
def discovered_plugins() -> tuple[PluginInfo, ...]:
    pm = get_plugin_manager()
    infos = []
    seen: dict[tuple[str, str], str] = {}
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            package, version = _package_of(pm, impl.plugin)
            try:
                objects = list(impl.function() or [])
            except Exception as exc:  # one broken hook must not stop every command
                print(f"harness: warning: {hook_name}() of {package} {version} failed "
                      f"({type(exc).__name__}: {first_line(exc)}); its {kind} plugins are disabled",
                      file=sys.stderr)
                continue
            for obj in objects:
                key = (kind, obj.name)
                if key in seen:
                    raise HarnessError(
                        f"{kind} {obj.name!r} is registered twice: by {seen[key]} and by {package}"
                    )
                seen[key] = package
                infos.append(PluginInfo(kind, obj.name, package, version, obj))
    return tuple(infos)


def registry(kind: str) -> dict[str, object]:
    """Plugin objects of one kind by name."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}")
    return {p.name: p.obj for p in all_plugins() if p.kind == kind}


def get(kind: str, name: str):
    """The plugin object of that kind and name, or a HarnessError listing the valid names.
    A plugin named ``prefix:`` answers for every name that starts with that prefix
    (``timm:`` for ``timm:vit_tiny_patch16_224``) unless its ``claims(name)`` says no."""
    reg = registry(kind)
    if name in reg:
        return reg[name]
    matches = [obj for key, obj in reg.items() if key.endswith(":") and name.startswith(key) and len(name) > len(key)]
    # a prefix family may leave names to another (``claims``): torchvision's ResNets are the
    # ResNet family's, its other networks go to the family that declares ``fallback_for``
    for obj in matches:
        if not hasattr(obj, "claims") or obj.claims(name):
            return obj
    for obj in reg.values():
        if any(name.startswith(prefix) for prefix in getattr(obj, "fallback_for", ())):
            return obj
    if matches:
        return matches[0]
    raise unknown_name(kind, name, [k + "<name>" if k.endswith(":") else k for k in reg])


def options_of(objects) -> dict:
    """The options the given plugin objects declare, by name."""
    return {o.name: o for obj in objects for o in (getattr(unwrap(obj), "options", ()) or ())}


def run_plugin_objects(cfg) -> list:
    """The registered plugin objects a run uses (by its resolved names): its model family,
    data set, method, criterion, similarity metrics (all of them when it records decisions),
    every structure and its evaluators, core ones included."""
    from harness.checks import CORE_EVALUATORS

    used = [get(kind, getattr(cfg, kind)) for kind in ("model", "dataset", "method", "criterion", "similarity")]
    if cfg.record_decisions:
        used += list(registry("similarity").values())
    used += list(registry("structure").values())
    used += [get("evaluator", name) for name in (*CORE_EVALUATORS, *cfg.evaluators)]
    return used


def all_options() -> dict:
    """Every :class:`harness.api.Option` that a plugin declares, by option name."""
    found = {}
    for info in all_plugins():
        for option in getattr(info.obj, "options", ()) or ():
            if option.name in found and found[option.name] is not option:
                raise HarnessError(f"option {option.flag} is declared twice: by {info.kind} {info.name} "
                                   f"({info.package}) and by another plugin")
            found[option.name] = option
    return found


def info(kind: str, name: str) -> PluginInfo | None:
    """The registration of one plugin (its package and version), if any."""
    return next((p for p in all_plugins() if p.kind == kind and p.name == name), None)


class Guarded:
    """A plugin object whose every call turns an exception into one line naming the
    plugin's kind, name and package (a :class:`PluginError`); attributes pass through.
    ``unwrap(guarded)`` gives the object itself."""

    def __init__(self, obj, kind: str):
        registered = info(kind, getattr(obj, "name", "?"))
        where = f"{registered.package} {registered.version}" if registered else "an unregistered plugin"
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_label", f"{kind} {getattr(obj, 'name', '?')!r} (from {where})")

    def _call(self, fn, args, kwargs):
        try:
            return fn(*args, **kwargs)
        except HarnessError:
            raise
        except Exception as exc:
            raise PluginError(f"{self._label} failed: {type(exc).__name__}: {first_line(exc)}") from exc

    def __getattr__(self, name):
        value = getattr(self._obj, name)
        if callable(value) and not isinstance(value, type) and not name.startswith("__"):
            @functools.wraps(value)
            def guarded(*args, **kwargs):
                return self._call(value, args, kwargs)

            return guarded
        return value

    def __setattr__(self, name, value):
        setattr(self._obj, name, value)

    def __call__(self, *args, **kwargs):
        return self._call(self._obj, args, kwargs)

    def __repr__(self):
        return f"Guarded({self._obj!r})"


def unwrap(obj):
    return obj._obj if isinstance(obj, Guarded) else obj


def _own_copy(obj):
    """A copy for one run, so that configuring it never changes another run's."""
    try:
        return copy.deepcopy(obj)
    except Exception:  # an object that holds something uncopyable: a shallow copy will do
        return copy.copy(obj)


@dataclass
class RunPlugins:
    """The plugin objects one run uses, each its own copy, configured once with the run's
    resolved options and guarded (:class:`Guarded`). The loop reads plugins from here only,
    so a new run, a resumed run and every run of a sweep are set up the same way."""

    model: Any
    dataset: Any
    method: Any
    criterion: Any
    similarity: Any  # the run's metric: the one the method reads
    similarities: dict[str, Any] = field(default_factory=dict)  # every metric: the decision records
    structures: list[Any] = field(default_factory=list)  # every registered structure, in load order
    evaluators: dict[str, Any] = field(default_factory=dict)  # core evaluators and the asked-for ones

    def all(self) -> list[Any]:
        seen, out = set(), []
        for obj in (self.model, self.dataset, self.method, self.criterion, self.similarity,
                    *self.similarities.values(), *self.structures, *self.evaluators.values()):
            if id(obj) not in seen:
                seen.add(id(obj))
                out.append(obj)
        return out


def for_run(cfg, evaluators: list[str]) -> RunPlugins:
    """Resolves, copies, configures (``configure(options)``, once) and guards the plugins of
    one run, from its own resolved config."""
    def own(kind, name):
        return Guarded(_own_copy(get(kind, name)), kind)

    similarities = {name: Guarded(_own_copy(obj), "similarity") for name, obj in sorted(registry("similarity").items())}
    run = RunPlugins(
        model=own("model", cfg.model), dataset=own("dataset", cfg.dataset), method=own("method", cfg.method),
        criterion=own("criterion", cfg.criterion), similarity=similarities.get(cfg.similarity) or own("similarity", cfg.similarity),
        similarities=similarities,
        structures=[Guarded(_own_copy(obj), "structure") for obj in registry("structure").values()],
        evaluators={name: own("evaluator", name) for name in evaluators},
    )
    for obj in run.all():
        if hasattr(unwrap(obj), "configure"):
            obj.configure(cfg.options)
    return run
