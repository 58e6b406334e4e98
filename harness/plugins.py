"""Deprecated: the plugin registry's old module. Looking plugins up is
:mod:`harness.registry` (one registry per invocation), a run's own plugin objects are
:mod:`harness.runplugins` and the kinds are :mod:`harness.kinds`; each old name still works
here with a DeprecationWarning naming its new place (CHANGELOG.md says how to migrate)."""

from __future__ import annotations

import dataclasses

from harness import kinds, registry, runplugins
from harness.config import BenchConfig
from harness.deprecation import moved_names, warn_deprecated
from harness.essentials import CORE_EVALUATORS


def temporarily_registered(kind: str, obj, package: str):
    """The old calling convention: an object, copied for each run."""
    warn_deprecated("harness.plugins.temporarily_registered(kind, object, package)",
                    "harness.registry.temporarily_registered(kind, factory, package)")
    build, _ = registry.factory_of(obj, kind, package)
    return registry.temporarily_registered(kind, build, package)


def for_run(cfg: BenchConfig, evaluators: list[str]) -> runplugins.RunPlugins:
    """The old calling convention: ``evaluators`` (the core's ones are the core's own now) are
    the run's asked-for evaluators."""
    warn_deprecated("harness.plugins.for_run", "harness.resolve.resolve(cfg).plugins")
    asked = [name for name in evaluators if name not in CORE_EVALUATORS]
    run = runplugins.build_run_plugins(dataclasses.replace(cfg, evaluators=asked))
    run.configure(cfg.options)
    return run


def options_of(objects) -> dict:
    warn_deprecated("harness.plugins.options_of(objects)", "RunPlugins.options()")
    return {o.name: o for obj in objects for o in (getattr(runplugins.unwrap(obj), "options", ()) or ())}


__getattr__ = moved_names(__name__, {
    **{name: (getattr(registry, name), f"harness.registry.{name}") for name in (
        "ENTRY_POINT_GROUP", "BUILTIN_PACKAGE", "BLOCK_ENV", "BUILTIN_ONLY_ENV", "PluginInfo", "get", "registry",
        "all_plugins", "all_options", "info")},
    **{name: (getattr(runplugins, name), f"harness.runplugins.{name}") for name in ("Guarded", "unwrap", "RunPlugins")},
    "KINDS": ({kind.name: kind.hook for kind in kinds.KINDS}, "harness.kinds.KINDS"),
})
