"""Every hook a plugin can implement: one ``register_<kinds>()`` per row of the table of plugin
kinds (:data:`harness.kinds.KINDS`), documented by the row.

A plugin is a module (or object) registered under the entry-point group ``harness``. Each
``register_*`` hook returns a list of plugin classes (or factories: calls without arguments
that return a plugin object) of one kind; every object has a unique ``name`` within its kind.
The interfaces those objects follow are in :mod:`harness.api`. The built-in plugins in
``plugins/`` use these same hooks.
"""

import pluggy

from harness.kinds import KINDS, Kind

hookspec = pluggy.HookspecMarker("harness")
#: Decorator for plugin hook implementations (``@harness.hookimpl``, the same object).
hookimpl = pluggy.HookimplMarker("harness")


def _hook_of(kind: Kind):
    def register():
        pass  # a specification: plugins implement it

    register.__name__ = register.__qualname__ = kind.hook
    register.__doc__ = f"Return a list of :class:`harness.api.{kind.interface}` classes (or factories): {kind.description}"
    return hookspec(register)


globals().update({kind.hook: _hook_of(kind) for kind in KINDS})
