"""The package's version, apart from ``harness/__init__.py`` so that the core can read it
without importing the package's lazy entry points (``harness.prune``)."""

__version__ = "0.1.0"
