"""The one plugin manager, and registries of plugin objects by kind and name."""

from __future__ import annotations

import functools
import importlib.metadata
import sys
from dataclasses import dataclass

import pluggy

from harness import hookspecs
from harness.errors import HarnessError, unknown_name

ENTRY_POINT_GROUP = "harness"

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


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    # Entry points are loaded one by one so that a broken plugin is reported by name
    # and the others still load.
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
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


@functools.lru_cache(maxsize=None)
def all_plugins() -> tuple[PluginInfo, ...]:
    pm = get_plugin_manager()
    infos = []
    seen: dict[tuple[str, str], str] = {}
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            package, version = _package_of(pm, impl.plugin)
            for obj in impl.function() or []:
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
    (``timm:`` for ``timm:vit_tiny_patch16_224``)."""
    reg = registry(kind)
    if name in reg:
        return reg[name]
    for key, obj in reg.items():
        if key.endswith(":") and name.startswith(key) and len(name) > len(key):
            return obj
    raise unknown_name(kind, name, [k + "<name>" if k.endswith(":") else k for k in reg])


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
