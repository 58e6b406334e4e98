"""prunebench: a plugin-based benchmarking harness for structured pruning."""

__version__ = "0.1.0"

import pluggy

#: Decorator for plugin hook implementations: ``@harness.hookimpl``.
hookimpl = pluggy.HookimplMarker("harness")


def __getattr__(name):
    # the Python entry point loads torch and the plugins: only when it is used
    if name in ("prune", "load_pruned"):
        from harness import pruning

        return getattr(pruning, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
