"""Old names kept for a while: each still works and says, with a DeprecationWarning, what
replaces it (CHANGELOG.md lists them with how to migrate)."""

from __future__ import annotations

import functools
import warnings


def warn_deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=stacklevel)


def moved_names(module: str, names: dict[str, tuple[object, str]]):
    """A module ``__getattr__`` answering for names that moved or were renamed: ``names`` maps
    each old name to (its replacement, where the replacement lives)."""
    def __getattr__(name):
        if name in names:
            replacement, new = names[name]
            warn_deprecated(f"{module}.{name}", new)
            return replacement
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def renamed(function, old: str, new: str):
    """``function`` under its old name, warning on each call."""
    @functools.wraps(function)
    def old_name(*args, **kwargs):
        warn_deprecated(old, new)
        return function(*args, **kwargs)

    old_name.__name__ = old.rpartition(".")[2]
    old_name.__qualname__ = old_name.__name__
    return old_name
