"""The plugin objects of one run: built for it from the registered factories, configured once
with its own options, and guarded so that a failure names the plugin and its package. The
loop reads plugins from here only, so a new run, a resumed run and every run of a sweep are
set up the same way."""

from __future__ import annotations

import functools
import os
import traceback
from typing import Any

from harness import registry
from harness.config import BenchConfig
from harness.errors import HarnessError, PluginError, first_line
from harness.kinds import KINDS, Kind

# the kinds whose options key a cached baseline unless they say otherwise (Option.affects_training)
BASELINE_KINDS = ("model", "dataset")


class Guarded:
    """A plugin object whose every call turns an exception into one line naming the
    plugin's kind, name and package (a :class:`PluginError`); attributes pass through.
    ``unwrap(guarded)`` gives the object itself."""

    def __init__(self, obj, kind: str, registered: registry.PluginInfo | None = None):
        """``registered``: the registration it was built from (default: the one its name finds)."""
        registered = registered or registry.info(kind, getattr(obj, "name", "?"))
        label = registered.label if registered else f"{kind} {getattr(obj, 'name', '?')!r} (from an unregistered plugin)"
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_registered", registered)

    def _call(self, fn, args, kwargs):
        try:
            return fn(*args, **kwargs)
        except HarnessError:
            raise  # its own one line, or another plugin's failure already named (a model family's inside surgery)
        except Exception as exc:
            raise PluginError(f"{self._label} failed: {type(exc).__name__}: {first_line(exc)}"
                              f"{raised_at(exc, self._obj)}") from exc

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


def raised_at(exc: BaseException, obj) -> str:
    """`` (at file.py:LINE)``: the last line of the plugin's own package that ran before ``exc``
    (else the line that raised it); the full stack is ``harness --traceback``'s."""
    own = type(obj).__module__.split(".")[0]
    frames = [(frame.f_globals.get("__name__", ""), frame.f_code.co_filename, line)
              for frame, line in traceback.walk_tb(exc.__traceback__)]
    mine = [f for f in frames if f[0].split(".")[0] == own] or frames[-1:]
    return f" (at {os.path.basename(mine[-1][1])}:{mine[-1][2]})" if mine else ""


def unwrap(obj):
    return obj._obj if isinstance(obj, Guarded) else obj


def label_of(obj, kind: str) -> str:
    """How errors name a run's plugin: ``similarity 'cka' (from prunebench 0.1.0)``."""
    return obj._label if isinstance(obj, Guarded) else f"{kind} {getattr(obj, 'name', '?')!r}"


def package_of(obj) -> str | None:
    """The package a run's plugin object was registered by (None: not known)."""
    registered = obj._registered if isinstance(obj, Guarded) else None
    return registered.package if registered else None


class RunPlugins:
    """The plugin objects one run uses, by kind and name, each built for this run. For every
    kind of :data:`harness.kinds.KINDS`, ``plugins.<plural>`` (``plugins.criteria``) is a dict
    of the run's objects by name and, when the kind's setting names one plugin,
    ``plugins.<kind>`` (``plugins.criterion``) is that one."""

    def __init__(self, cfg: BenchConfig, by_kind: dict[str, dict[str, Any]]):
        self._names = {kind.name: getattr(cfg, kind.setting) for kind in KINDS
                       if kind.setting and isinstance(getattr(cfg, kind.setting), str)}
        self._by_kind = by_kind

    def __getattr__(self, name):
        for kind in KINDS:
            if name == kind.plural:
                return self._by_kind[kind.name]
            if name == kind.name and kind.name in self._names:
                return self._by_kind[kind.name][self._names[kind.name]]
        raise AttributeError(f"a run has no plugins called {name!r}")

    def all(self) -> list[Any]:
        return [obj for objects in self._by_kind.values() for obj in objects.values()]

    def options(self) -> dict:
        """The options the run's plugins declare, by name: the run's own settings."""
        return {o.name: o for obj in self.all() for o in (getattr(unwrap(obj), "options", ()) or ())}

    def training_options(self) -> set[str]:
        """The names of the run's options that key its cached baseline: those declared
        ``affects_training=True``, and those of its model family and data set that do not
        say (an option of theirs changes the network or the data unless declared otherwise)."""
        keyed = set()
        for kind in KINDS:
            for obj in self._by_kind[kind.name].values():
                for o in getattr(unwrap(obj), "options", ()) or ():
                    declared = getattr(o, "affects_training", None)
                    if declared or (declared is None and kind.name in BASELINE_KINDS):
                        keyed.add(o.name)
        return keyed

    def configure(self, options: dict[str, Any]) -> None:
        """Each plugin's ``configure(options)``, once, before the run starts."""
        for obj in self.all():
            if hasattr(unwrap(obj), "configure"):
                obj.configure(options)


def names_used(kind: Kind, cfg: BenchConfig) -> list[str]:
    """The names of the plugins of ``kind`` that a run with this configuration uses."""
    if kind.every is True or (kind.every and getattr(cfg, kind.every)):
        return sorted(registry.current().of_kind(kind.name))
    if kind.setting is None:
        return []
    value = getattr(cfg, kind.setting)
    return [value] if isinstance(value, str) else list(value)


def build_run_plugins(cfg: BenchConfig) -> RunPlugins:
    """Fresh, guarded plugin objects for a run with this configuration (its names resolved),
    not yet configured."""
    current = registry.current()

    def built(kind: Kind, name: str) -> Guarded:
        info = current.entry(kind.name, name)
        return Guarded(info.build(), kind.name, info)

    return RunPlugins(cfg, {kind.name: {name: built(kind, name) for name in names_used(kind, cfg)} for kind in KINDS})
