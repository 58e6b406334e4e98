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
lists entry-point or package names not to load, or single plugins (``PACKAGE:NAME``), and
``HARNESS_BUILTIN_PLUGINS_ONLY=1`` (or ``harness --builtin-only``) loads this package's own
plugins only. The core's own plugins (:mod:`harness.essentials`) and the built-in entry
points the harness cannot run without (:data:`ESSENTIAL`) cannot be blocked.

No installed package can stop every command: a plugin that takes a name another plugin of
its kind has (a built-in's, most often, when prunebench adds a plugin a package already had)
is a warning naming both; the bare name stays prunebench's (or, between two outside
packages, answers neither), and ``PACKAGE:NAME`` chooses any plugin. A hook that raises or
returns something unusable, an object that cannot be built and an option declared twice are
warnings too, leaving that much out.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import warnings
from typing import Any, Callable, Iterable

import pluggy

from harness import essentials, hookspecs
from harness.errors import HarnessError, first_line, unknown_name, warn
from harness.kinds import KINDS, kind_named
# PluginInfo and factory_of are read from here too
from harness.registration import BUILTIN_PACKAGE, PluginInfo, factory_of, normalized, warn_shadowed, without_repeats
from harness.version import __version__

ENTRY_POINT_GROUP = "harness"
BLOCK_ENV = "HARNESS_BLOCK_PLUGINS"
BUILTIN_ONLY_ENV = "HARNESS_BUILTIN_PLUGINS_ONLY"

# The built-in entry points without which the harness cannot run: the settings' defaults name
# their plugins (tiny-resnet on digits, method cka, criterion kl, similarity cka), harness.prune
# prunes through the traced structures and the conformance kit checks on resnet20's. The
# evaluators are not among them: the core measures accuracy and FLOPs itself.
ESSENTIAL = ("models", "datasets", "structures", "criteria", "similarity", "methods")


class Registry:
    """The plugins of one invocation: loaded on first use, then fixed."""

    def __init__(self, blocked: Iterable[str] = (), builtin_only: bool = False, extra: dict[str, Any] | None = None):
        """``extra``: plugins to register besides the entry points (pytest.main's ``plugins``),
        by the package name they are listed under. ``blocked``: entry points or packages, or
        single plugins as ``PACKAGE:NAME`` (or ``ENTRY-POINT:NAME``)."""
        self.blocked = {name.strip() for name in blocked if name and name.strip()}
        self.builtin_only = builtin_only
        self.extra = dict(extra or {})
        whole = {name for name in self.blocked if ":" not in name}
        refused = sorted(whole & {*ESSENTIAL, BUILTIN_PACKAGE})
        if refused:
            raise HarnessError(f"cannot block {', '.join(refused)}: the harness cannot run without prunebench's "
                               f"{', '.join(ESSENTIAL)} (its defaults, harness.prune and the conformance kit use "
                               "them); of prunebench's entry points only evaluators can be blocked; block one "
                               "plugin as prunebench:NAME")
        core = sorted(f"{BUILTIN_PACKAGE}:{name}" for name in essentials.CORE_EVALUATORS
                      if self._blocks_plugin(BUILTIN_PACKAGE, "", name))
        if core:
            raise HarnessError(f"cannot block {', '.join(core)}: the core measures accuracy and FLOPs itself")
        self._found: tuple[PluginInfo, ...] | None = None
        self._temporary: list[PluginInfo] = []
        self._option_warnings: set = set()  # each clash of option names is said once

    def _blocks_plugin(self, package: str, entry_point: str, name: str) -> bool:
        """Whether ``--block`` names this one plugin (``PACKAGE:NAME`` or ``ENTRY-POINT:NAME``)."""
        return any(":" in b and b.split(":", 1)[1] == name and
                   normalized(b.split(":", 1)[0]) in (normalized(package), normalized(entry_point) if entry_point else "")
                   for b in self.blocked)

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
    def _manager(self) -> tuple[pluggy.PluginManager, dict[int, tuple[str, str, str]]]:
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        pm.register(essentials, name="harness-essentials")
        packages = {id(essentials): (BUILTIN_PACKAGE, __version__, "")}
        # Entry points are loaded one by one so that a broken plugin is reported by name and
        # the others still load.
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            package = ep.dist.name if ep.dist else "?"
            if ep.name in self.blocked or package in self.blocked or normalized(package) in self.blocked \
                    or (self.builtin_only and package != BUILTIN_PACKAGE):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a third-party plugin must not take the harness down
                warn(f"plugin {ep.name!r} failed to load: {exc}")
                continue
            if not pm.is_registered(module):
                pm.register(module)
                packages[id(module)] = (package, ep.dist.version if ep.dist else "?", ep.name)
        for package, plugin in self.extra.items():
            pm.register(plugin)
            packages[id(plugin)] = (package, "", "")
        return pm, packages

    def _discover(self) -> tuple[PluginInfo, ...]:
        pm, packages = self._manager()
        found = []
        for kind in KINDS:
            for impl in getattr(pm.hook, kind.hook).get_hookimpls():
                package, version, entry_point = packages.get(id(impl.plugin), ("?", "?", ""))
                where = f"{package} {version}".strip() + (f" (entry point {entry_point!r})" if entry_point else "")
                try:
                    entries = list(impl.function() or [])
                except Exception as exc:  # one broken hook must not stop every command
                    warn(f"{kind.hook}() of {where} failed ({type(exc).__name__}: {first_line(exc)}); the "
                         f"{kind.name} plugins of that entry point are left out")
                    continue
                for entry in entries:
                    try:  # nor one object that cannot be made
                        build, is_object = factory_of(entry, kind.name, package)
                        obj = entry if is_object else build()
                        name = obj.name
                        if not isinstance(name, str) or not name:
                            raise HarnessError(f"its name is {name!r}, not a text")
                    except Exception as exc:
                        warn(f"a {kind.name} plugin of {where} is left out: {type(exc).__name__}: {first_line(exc)}")
                        continue
                    if is_object:
                        warnings.warn(f"{kind.hook}() of {package} returned an object ({kind.name} {obj.name!r}); "
                                      "return its class or a factory: registered objects are copied for each run, "
                                      "which is deprecated", DeprecationWarning, stacklevel=2)
                    if self._blocks_plugin(package, entry_point, name):
                        continue
                    found.append(PluginInfo(kind.name, name, package, version, obj, build, entry_point))
        found = without_repeats(found)
        warn_shadowed(found)
        return tuple(found)

    def plugins(self) -> tuple[PluginInfo, ...]:
        """Every plugin: those the hooks registered (loaded on first use) and the temporary ones."""
        if self._found is None:
            self._found = self._discover()
        return self._found + tuple(self._temporary)

    # ---------------------------------------------------------------- lookup
    def of_kind(self, kind: str) -> dict[str, PluginInfo]:
        """The plugins of one kind by the name that chooses each: its own name, or
        ``PACKAGE:NAME`` when another plugin of the kind has that name too (prunebench's keeps
        the bare name; between outside packages neither does)."""
        kind_named(kind)
        mine = [p for p in self.plugins() if p.kind == kind]
        counts: dict[str, list[PluginInfo]] = {}
        for p in mine:
            counts.setdefault(p.name, []).append(p)
        out = {}
        for p in mine:
            same = counts[p.name]
            plain = len(same) == 1 or p.package == BUILTIN_PACKAGE
            out[p.name if plain else p.qualified] = p
        return out

    def entry(self, kind: str, name: str) -> PluginInfo:
        """The registration of that kind and name, or a HarnessError listing the valid names.
        ``PACKAGE:NAME`` is that package's plugin. A plugin named ``prefix:`` answers for every
        name that starts with that prefix (``timm:`` for ``timm:vit_tiny_patch16_224``) unless
        its ``claims(name)`` says no."""
        reg = self.of_kind(kind)
        if name in reg:
            return reg[name]
        package, _, rest = name.partition(":")
        own = [p for p in reg.values() if normalized(p.package) == normalized(package)] if rest else []
        if own:  # PACKAGE:NAME, the prefix families of that package included
            found = self._lookup(kind, rest, {p.name: p for p in own})
            if found:
                return found
        ambiguous = [p for p in reg.values() if p.name == name]
        if ambiguous:
            raise HarnessError(f"{kind} {name!r} is registered by {' and by '.join(p.package for p in ambiguous)}; "
                               f"choose one: {', '.join(p.qualified for p in ambiguous)}")
        found = self._lookup(kind, name, reg)
        if found:
            return found
        raise unknown_name(kind, name, [k + "<name>" if k.endswith(":") else k for k in reg])

    @staticmethod
    def _lookup(kind: str, name: str, reg: dict[str, PluginInfo]) -> PluginInfo | None:
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
        return matches[0] if matches else None

    def option_owners(self) -> dict[str, PluginInfo]:
        """The plugin that declares each option, by option name (the first, prunebench's before
        others', when two declare one: the other's is left out with a warning)."""
        found: dict[str, tuple[Any, PluginInfo]] = {}
        ordered = sorted(self.plugins(), key=lambda p: p.package != BUILTIN_PACKAGE)
        for info in ordered:
            for option in getattr(info.obj, "options", ()) or ():
                if option.name in found and found[option.name][0] is not option:
                    first = found[option.name][1]
                    if (option.name, info.qualified) not in self._option_warnings:
                        self._option_warnings.add((option.name, info.qualified))
                        warn(f"option {option.flag} of {info.label} is declared by {first.label} already; "
                             f"{info.package}'s declaration is left out (its plugin reads the other's value)")
                    continue
                found.setdefault(option.name, (option, info))
        return {name: info for name, (_, info) in found.items()}

    def all_options(self) -> dict:
        """Every :class:`harness.api.Option` that a plugin declares, by option name."""
        owners = self.option_owners()
        return {name: next(o for o in info.obj.options if o.name == name) for name, info in owners.items()}

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
    try:
        return current().entry(kind, name)
    except HarnessError:
        return None


def all_options() -> dict:
    return current().all_options()


def temporarily_registered(kind: str, factory: Callable[[], Any], package: str):
    return current().temporarily_registered(kind, factory, package)
