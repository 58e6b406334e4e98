"""prunebench: a plugin-based benchmarking harness for structured pruning."""

__version__ = "0.1.0"

import pluggy

#: Decorator for plugin hook implementations: ``@harness.hookimpl``.
hookimpl = pluggy.HookimplMarker("harness")
