"""prunebench: a plugin-based benchmarking harness for structured pruning."""

from harness.hookspecs import hookimpl  # noqa: F401 - plugins decorate their hooks with @harness.hookimpl
from harness.version import __version__  # noqa: F401


def __getattr__(name):
    # the Python entry point loads torch and the plugins: only when it is used
    if name in ("prune", "load_pruned"):
        from harness import pruning

        return getattr(pruning, name)
    if name == "export_pruned":
        from harness.export import export_pruned

        return export_pruned
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
