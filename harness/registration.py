"""One registration of a plugin (:class:`PluginInfo`) and what the registry makes of what a
hook returned: a factory for each run, and the warnings that leave clashing names to the user
(:mod:`harness.registry` holds the registrations of one invocation)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable

from harness.errors import HarnessError, first_line, warn
from harness.kinds import kind_named

BUILTIN_PACKAGE = "prunebench"


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    package: str
    version: str
    obj: Any  # the registry's own object: listed, looked up, read for its options; never run
    build: Callable[[], Any]  # a fresh object for one run
    entry_point: str = ""  # the entry point that registered it ("" for the core's and temporary ones)

    @property
    def qualified(self) -> str:
        """``PACKAGE:NAME``, which names this plugin whatever else is installed."""
        return f"{self.package}:{self.name}"

    @property
    def label(self) -> str:
        """How errors and warnings name it: ``method 'cka' (from prunebench 0.1.0)``."""
        return f"{self.kind} {self.name!r} (from {self.package}{' ' + self.version if self.version else ''})"


def normalized(package: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Harness_Lab.Plugins`` is ``harness-lab-plugins``."""
    return re.sub(r"[-_.]+", "-", package).lower()


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



def without_repeats(found: list[PluginInfo]) -> list[PluginInfo]:
    """One package registering one name twice in a kind: its first registration, with a warning."""
    kept, seen = [], set()
    for info in found:
        key = (info.kind, normalized(info.package), info.name)
        if key in seen:
            warn(f"{info.kind} {info.name!r} is registered twice by {info.package}; the first is used")
            continue
        seen.add(key)
        kept.append(info)
    return kept

def warn_shadowed(found: list[PluginInfo]) -> None:
    by_name: dict[tuple[str, str], list[PluginInfo]] = {}
    for info in found:
        by_name.setdefault((info.kind, info.name), []).append(info)
    for (kind, name), same in by_name.items():
        if len(same) < 2:
            continue
        builtin = next((p for p in same if p.package == BUILTIN_PACKAGE), None)
        others = [p for p in same if p is not builtin]
        choices = " or ".join(p.qualified for p in same)
        if builtin:
            for p in others:
                warn(f"{kind} {name!r} of {p.package} {p.version} has the name of prunebench's own {kind}; "
                     f"{name!r} stays prunebench's: choose {p.package}'s as {p.qualified} (or give it the "
                     f"name with --block {builtin.qualified})")
        else:
            warn(f"{kind} {name!r} is registered by {' and by '.join(p.package for p in same)}; the name "
                 f"answers neither: choose {choices} (or --block one of them)")
