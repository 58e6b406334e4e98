"""The plugins of one invocation (after pytest's ``Config``): a plugin manager, what each
hook registered, and the objects the registry builds from it. ``harness ...`` makes one per
command, with that command's ``--block``/``--builtin-only``; Python callers share a default
one made from the environment. Everything that looks plugins up asks :func:`current`.

A hook returns classes or factories (calls without arguments that return a plugin object).
The registry builds one object of each to list, look up and read options from, and
:func:`build` makes a fresh one for each run (:mod:`harness.runplugins` configures it with
that run's options). A returned object is still accepted, and copied for each run, with a
DeprecationWarning.

Which entry points load can be narrowed, as pytest's ``-p no:NAME`` and
``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` do: ``HARNESS_BLOCK_PLUGINS`` (or ``harness --block``)
lists entry-point or package names not to load, and ``HARNESS_BUILTIN_PLUGINS_ONLY=1`` (or
``harness --builtin-only``) loads this package's own plugins only. The core's own plugins
(:mod:`harness.essentials`) and the built-in entry points the harness cannot run without
(:data:`ESSENTIAL`) cannot be blocked.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import pluggy

from harness import essentials, hookspecs
from harness.errors import HarnessError, first_line, unknown_name, warn
from harness.kinds import KINDS, kind_named
from harness.version import __version__

ENTRY_POINT_GROUP = "harness"
BUILTIN_PACKAGE = "prunebench"
BLOCK_ENV = "HARNESS_BLOCK_PLUGINS"
BUILTIN_ONLY_ENV = "HARNESS_BUILTIN_PLUGINS_ONLY"

# The built-in entry points without which the harness cannot run: the settings' defaults name
# their plugins (tiny-resnet on digits, method cka, criterion kl, similarity cka), harness.prune
# prunes through the traced structures and the conformance kit checks on resnet20's. The
# evaluators are not among them: the core measures accuracy and FLOPs itself.
ESSENTIAL = ("models", "datasets", "structures", "criteria", "similarity", "methods")


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    package: str
    version: str
    obj: Any  # the registry's own object: listed, looked up, read for its options; never run
    build: Callable[[], Any]  # a fresh object for one run


def factory_of(entry, kind: str, package: str) -> tuple[Callable[[], Any], bool]:
    """How to build a fresh object from what a hook returned (a class, a factory or, deprecated,
    an object), and whether it was an object."""
    if isinstance(entry, type):
        return entry, False
    if hasattr(entry, "name"):  # an object: factories and classes are asked for their name once built
        return (lambda: own_copy(entry, kind, package)), True
    if callable(entry):
        return entry, False
    raise HarnessError(f"register_{kind_named(kind).plural}() of {package} returned {entry!r}: "
                       "return plugin classes or factories")


def own_copy(obj, kind: str, package: str):
    """A copy of a registered object for one run, so that configuring it never changes another
    run's; an object that cannot be deep-copied is copied shallowly, which is said once."""
    try:
        return copy.deepcopy(obj)
    except Exception as exc:
        warn(f"{kind} {obj.name!r} (from {package}) cannot be deep-copied ({type(exc).__name__}: "
             f"{first_line(exc)}); its runs share what a shallow copy shares: register its class or a factory")
        return copy.copy(obj)


class Registry:
    """The plugins of one invocation: loaded on first use, then fixed."""

    def __init__(self, blocked: Iterable[str] = (), builtin_only: bool = False, extra: dict[str, Any] | None = None):
        """``extra``: plugins to register besides the entry points (pytest.main's ``plugins``),
        by the package name they are listed under."""
        self.blocked = {name for name in blocked if name}
        self.builtin_only = builtin_only
        self.extra = dict(extra or {})
        refused = sorted(self.blocked & {*ESSENTIAL, BUILTIN_PACKAGE})
        if refused:
            raise HarnessError(f"cannot block {', '.join(refused)}: the harness cannot run without prunebench's "
                               f"{', '.join(ESSENTIAL)} (its defaults, harness.prune and the conformance kit use "
                               "them); of prunebench's entry points only evaluators can be blocked")
        self._found: tuple[PluginInfo, ...] | None = None
        self._temporary: list[PluginInfo] = []

    @classmethod
    def from_environment(cls, blocked: Iterable[str] = (), builtin_only: bool = False) -> Registry:
        """A registry with the environment's blocking settings and these."""
        from_env = [n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",")]
        only = os.environ.get(BUILTIN_ONLY_ENV, "").lower() not in ("", "0", "false", "no")
        return cls([*from_env, *blocked], builtin_only or only)

    def environment(self) -> dict[str, str]:
        """What child processes (sweep shards, Ray workers) need to load the same plugins."""
        env = {BLOCK_ENV: ",".join(sorted(self.blocked))} if self.blocked else {}
        return env | ({BUILTIN_ONLY_ENV: "1"} if self.builtin_only else {})

    # ---------------------------------------------------------------- loading
    def _manager(self) -> tuple[pluggy.PluginManager, dict[int, tuple[str, str]]]:
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        pm.register(essentials, name="harness-essentials")
        packages = {id(essentials): (BUILTIN_PACKAGE, __version__)}
        # Entry points are loaded one by one so that a broken plugin is reported by name and
        # the others still load.
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            package = ep.dist.name if ep.dist else "?"
            if ep.name in self.blocked or package in self.blocked or (self.builtin_only and package != BUILTIN_PACKAGE):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a third-party plugin must not take the harness down
                warn(f"plugin {ep.name!r} failed to load: {exc}")
                continue
            if not pm.is_registered(module):
                pm.register(module)
                packages[id(module)] = (ep.dist.name, ep.dist.version) if ep.dist else ("?", "?")
        for package, plugin in self.extra.items():
            pm.register(plugin)
            packages[id(plugin)] = (package, "")
        return pm, packages

    def _discover(self) -> tuple[PluginInfo, ...]:
        pm, packages = self._manager()
        found, seen = [], {}
        for kind in KINDS:
            for impl in getattr(pm.hook, kind.hook).get_hookimpls():
                package, version = packages.get(id(impl.plugin), ("?", "?"))
                try:
                    entries = list(impl.function() or [])
                except Exception as exc:  # one broken hook must not stop every command
                    warn(f"{kind.hook}() of {package} {version} failed ({type(exc).__name__}: {first_line(exc)}); "
                         f"its {kind.name} plugins are disabled")
                    continue
                for entry in entries:
                    build, is_object = factory_of(entry, kind.name, package)
                    obj = entry if is_object else build()
                    if is_object:
                        warnings.warn(f"{kind.hook}() of {package} returned an object ({kind.name} {obj.name!r}); "
                                      "return its class or a factory: registered objects are copied for each run, "
                                      "which is deprecated", DeprecationWarning, stacklevel=2)
                    key = (kind.name, obj.name)
                    if key in seen:
                        raise HarnessError(f"{kind.name} {obj.name!r} is registered twice: by {seen[key]} and by {package}")
                    seen[key] = package
                    found.append(PluginInfo(kind.name, obj.name, package, version, obj, build))
        return tuple(found)

    def plugins(self) -> tuple[PluginInfo, ...]:
        """Every plugin: those the hooks registered (loaded on first use) and the temporary ones."""
        if self._found is None:
            self._found = self._discover()
        return self._found + tuple(self._temporary)

    # ---------------------------------------------------------------- lookup
    def of_kind(self, kind: str) -> dict[str, PluginInfo]:
        kind_named(kind)
        return {p.name: p for p in self.plugins() if p.kind == kind}

    def entry(self, kind: str, name: str) -> PluginInfo:
        """The registration of that kind and name, or a HarnessError listing the valid names.
        A plugin named ``prefix:`` answers for every name that starts with that prefix
        (``timm:`` for ``timm:vit_tiny_patch16_224``) unless its ``claims(name)`` says no."""
        reg = self.of_kind(kind)
        if name in reg:
            return reg[name]
        matches = [p for key, p in reg.items() if key.endswith(":") and name.startswith(key) and len(name) > len(key)]
        # a prefix family may leave names to another (``claims``): torchvision's ResNets are the
        # ResNet family's, its other networks go to the family that declares ``fallback_for``
        for p in matches:
            if not hasattr(p.obj, "claims") or p.obj.claims(name):
                return p
        for p in reg.values():
            if any(name.startswith(prefix) for prefix in getattr(p.obj, "fallback_for", ())):
                return p
        if matches:
            return matches[0]
        raise unknown_name(kind, name, [k + "<name>" if k.endswith(":") else k for k in reg])

    def all_options(self) -> dict:
        """Every :class:`harness.api.Option` that a plugin declares, by option name."""
        found = {}
        for info in self.plugins():
            for option in getattr(info.obj, "options", ()) or ():
                if option.name in found and found[option.name] is not option:
                    raise HarnessError(f"option {option.flag} is declared twice: by {info.kind} {info.name} "
                                       f"({info.package}) and by another plugin")
                found[option.name] = option
        return found

    @contextlib.contextmanager
    def temporarily_registered(self, kind: str, factory: Callable[[], Any], package: str):
        """What ``factory`` builds, a plugin of that kind for the length of a ``with``."""
        obj = factory()
        if obj.name in self.of_kind(kind):
            raise HarnessError(f"{kind} {obj.name!r} is registered already")
        info = PluginInfo(kind, obj.name, package, "", obj, factory)
        self._temporary.append(info)
        try:
            yield obj
        finally:
            self._temporary.remove(info)


# ---------------------------------------------------------------- the registry in use
_ACTIVE: list[Registry] = []  # the invocations running, innermost last
_DEFAULT: list[Registry] = []  # the one Python callers share, made on first use


def current() -> Registry:
    if _ACTIVE:
        return _ACTIVE[-1]
    if not _DEFAULT:
        _DEFAULT.append(Registry.from_environment())
    return _DEFAULT[0]


@contextlib.contextmanager
def activated(registry: Registry):
    """``registry`` the one in use, and its blocking settings in the environment of child
    processes, for the length of a ``with`` (one command); both restored after."""
    saved = {key: os.environ.get(key) for key in (BLOCK_ENV, BUILTIN_ONLY_ENV)}
    os.environ.update(registry.environment())
    _ACTIVE.append(registry)
    try:
        yield registry
    finally:
        _ACTIVE.remove(registry)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def all_plugins() -> tuple[PluginInfo, ...]:
    return current().plugins()


def registry(kind: str) -> dict[str, Any]:
    """Plugin objects of one kind by name (the registry's own: for lookup, never for a run)."""
    return {name: p.obj for name, p in current().of_kind(kind).items()}


def get(kind: str, name: str):
    """The registry's own plugin object of that kind and name (see :meth:`Registry.entry`)."""
    return current().entry(kind, name).obj


def build(kind: str, name: str):
    """A fresh plugin object of that kind and name, for one run."""
    return current().entry(kind, name).build()


def info(kind: str, name: str) -> PluginInfo | None:
    """The registration of one plugin (its package and version), if any."""
    return current().of_kind(kind).get(name)


def all_options() -> dict:
    return current().all_options()


def temporarily_registered(kind: str, factory: Callable[[], Any], package: str):
    return current().temporarily_registered(kind, factory, package)
