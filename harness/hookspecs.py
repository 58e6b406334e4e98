"""Every hook a plugin can implement.

A plugin is a module (or object) registered under the entry-point group ``harness``.
Each ``register_*`` hook returns a list of plugin objects of one kind; every object has a
unique ``name`` within its kind. The interfaces those objects follow are in
:mod:`harness.api`. The built-in plugins in ``plugins/`` use these same hooks.
"""

import pluggy

hookspec = pluggy.HookspecMarker("harness")
#: Decorator for plugin hook implementations (``@harness.hookimpl``, the same object).
hookimpl = pluggy.HookimplMarker("harness")


@hookspec
def register_models():
    """Return a list of :class:`harness.api.ModelFamily`: networks created by name
    (``resnet20``), rebuilt from an architecture spec, with optional pretrained weights."""


@hookspec
def register_datasets():
    """Return a list of :class:`harness.api.Dataset`: loaders for train, calibration and
    test splits, with the normalisation the models expect."""


@hookspec
def register_structures():
    """Return a list of :class:`harness.api.Structure`: a kind of prunable unit (a
    residual block, a filter) that can be listed, ablated temporarily and removed for good."""


@hookspec
def register_criteria():
    """Return a list of :class:`harness.api.Criterion`: importance scores for units of a
    structure; lower means less important, comparable across layers."""


@hookspec
def register_similarities():
    """Return a list of :class:`harness.api.Similarity`: a representation similarity,
    higher meaning more similar, used to compare a candidate with its parent."""


@hookspec
def register_methods():
    """Return a list of :class:`harness.api.Method`: the decision rule of one pruning
    iteration (which candidates to build and which to keep)."""


@hookspec
def register_evaluators():
    """Return a list of :class:`harness.api.Evaluator`: measurements taken on the unpruned
    model and on the model after each iteration."""
