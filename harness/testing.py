"""The conformance kit for plugin authors: the invariants the plugins of every kind must keep
(model families, data sets, structures, criteria, similarity metrics, methods, evaluators),
checked on small seeded inputs. The harness's own suite runs them on every registered plugin;
a plugin package runs them in its own tests::

    from harness.testing import check_similarity
    def test_my_metric_conforms():
        assert check_similarity(MyMetric()) == []

or from the command line, on an installed plugin: ``harness check-plugin similarity my-metric``
(``--model M`` checks a structure, criterion or evaluator on another network).

Each ``check_*`` returns a list of problems, one line each (empty: the plugin conforms); a
check that raises is reported as a problem, not as a crash. A kind without a check of its own
(``Kind.conformance``) is checked against its interface (:func:`check_interface`). :func:`plugin`
gives an installed plugin (a built-in structure to check a network with, for instance).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import tempfile
from typing import Callable

import torch
from torch import nn

from harness import api, registry
from harness.api import CriterionContext, DataSplits, EvalContext, TensorSplit
from harness.conformance import (check_dataset, check_method, check_model_family, model_named,  # noqa: F401
                                 run_checks, structures_for)
from harness.errors import HarnessError
from harness.kinds import KINDS, kind_named
from harness.measure import count_parameters

Problems = list[str]


def _randn(g: torch.Generator, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _orthogonal(g: torch.Generator, size: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(_randn(g, size, size))
    return q


def plugin(kind: str, name: str):
    """A fresh object of the installed plugin of that kind and name (``PACKAGE:NAME`` too), as a
    run gets one: ``check_structure(plugin("structure", "resnet-filter"), my_network)``."""
    return registry.build(kind, name)


_checks = run_checks


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))


# ---------------------------------------------------------------- similarity metrics
def check_similarity(metric) -> Problems:
    """A similarity of two representations (n x p and n x q) of the same inputs: ``maximum``
    on identical inputs, invariant to orthogonal transforms and isotropic scaling of either
    input (what every metric in the paper's family keeps), a finite float for different
    widths, related representations clearly above unrelated ones, float32 as float64, and a
    one-line HarnessError for representations of different inputs."""
    g = torch.Generator().manual_seed(0)
    spectrum = torch.logspace(0, -1.5, 20, dtype=torch.float64)
    x = _randn(g, 96, 20) * spectrum
    y = x @ _randn(g, 20, 35) + 0.3 * _randn(g, 96, 35)
    maximum = getattr(metric, "maximum", 1.0)

    def identical():
        for rep in (x, y):
            value = metric(rep, rep)
            if not _close(value, maximum, 1e-6):
                return f"identical inputs give {value:.6g}, not its maximum {maximum:g}"

    def orthogonal():
        ref = metric(x, y)
        moved = (metric(x @ _orthogonal(g, 20), y), metric(x, y @ _orthogonal(g, 35)))
        if not all(_close(v, ref, 1e-6) for v in moved):
            return f"{ref:.6g} becomes {moved[0]:.6g} / {moved[1]:.6g} under a rotation of one input"

    def scaling():
        ref, scaled = metric(x, y), metric(3.7 * x, 0.01 * y)
        if not _close(scaled, ref, 1e-6):
            return f"{ref:.6g} becomes {scaled:.6g} when the inputs are scaled"

    def finite():
        value = metric(x, y)
        if not isinstance(value, float) or not math.isfinite(value):
            return f"gives {value!r}, not a finite float"
        if value >= maximum - 1e-3:
            return f"a noisy map of the input scores {value:.6g}, its maximum"

    def related():
        mixing = _randn(g, 20, 35)
        base = _randn(g, 256, 20) * spectrum
        near = base @ mixing + 0.2 * _randn(g, 256, 35)
        far = (_randn(g, 256, 20) * spectrum) @ mixing + 0.2 * _randn(g, 256, 35)
        a, b = metric(base, near), metric(base, far)
        if not a > b + 0.2:
            return f"related inputs score {a:.4g}, unrelated ones {b:.4g}: not clearly lower"

    def precision():
        a, b = metric(x.float(), y.float()), metric(x, y)
        if not isinstance(a, float) or not _close(a, b, 1e-4):
            return f"float32 inputs give {a!r}, float64 {b:.6g}"

    def refuses():
        try:
            metric(x, y[:-1])
        except HarnessError as exc:
            return None if "\n" not in str(exc) else "its error is more than one line"
        return "accepts representations with different numbers of rows (use Similarity.matrices)"

    return _checks([("maximum", identical), ("orthogonal invariance", orthogonal), ("scale invariance", scaling),
                    ("finite", finite), ("related above unrelated", related), ("float32", precision),
                    ("different inputs", refuses)])


# ---------------------------------------------------------------- structures and criteria
def _default_model() -> nn.Module:
    return model_named("resnet20")


def _inputs(shape: tuple[int, ...], n: int = 8) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


def check_structure(structure, model: nn.Module | None = None, input_shape: tuple[int, ...] = (3, 32, 32)) -> Problems:
    """A structure on a model it supports (default: a seeded CIFAR ResNet-20): units to remove;
    ``ablate`` changes the output and restores every parameter exactly on exit; ``remove``
    returns a smaller network that runs, with the same output shape, leaving the parent
    untouched; ``weights`` gives tensors for every unit."""
    model = model if model is not None else _default_model()
    x = _inputs(input_shape)
    found: dict[str, list] = {}

    def supports():
        if not structure.supports(model):
            return (f"does not support the model it is checked on ({getattr(model, 'arch', {}).get('model', type(model).__name__)}); "
                    "check it on one it prunes: check_structure(structure, model), or harness check-plugin "
                    "structure NAME --model M")
        found["units"] = structure.units(model)
        if not found["units"]:
            return "lists no units on it"

    def ablation():
        units = found["units"][:1]
        before, state = model(x), _state(model)
        with structure.ablate(model, units):
            ablated = model(x)
            changed = not _same_state(model, state)
        if not changed:
            return "ablation did not change any parameter in place (gradient criteria read that change)"
        if not _same_state(model, state):
            return "ablation did not restore the parameters exactly"
        if torch.allclose(ablated, before):
            return "ablating a unit leaves the output unchanged"

    def removal():
        units = found["units"][:1]
        state = _state(model)
        pruned = structure.remove(model, units)
        if pruned is model:
            return "remove() must return a new network"
        if not _same_state(model, state):
            return "remove() changed the parent"
        if count_parameters(pruned) >= count_parameters(model):
            return "the network is not smaller after remove()"
        out = pruned.eval()(x)
        if out.shape != model(x).shape:
            return f"the output shape changed from {tuple(model(x).shape)} to {tuple(out.shape)}"

    def weights():
        empty = [u.key for u in found["units"] if not structure.weights(model, u)]
        if empty:
            return f"no weight tensors for {', '.join(empty[:3])}"

    return _checks([("supports", supports)]) or _checks(
        [("ablate", ablation), ("remove", removal), ("weights", weights)])


def check_criterion(criterion, structures=None, model: nn.Module | None = None,
                    input_shape: tuple[int, ...] = (3, 32, 32)) -> Problems:
    """A criterion on every structure given (default: the built-in block and filter structures
    on a seeded ResNet-20): one finite float per unit, the same scores for the same seed, and
    the model's parameters unchanged afterwards."""
    model = model if model is not None else _default_model()
    if structures is None:
        structures = [registry.get("structure", "resnet-block"), registry.get("structure", "resnet-filter")]
    x = _inputs(input_shape, 16)
    labels = torch.arange(16) % 10
    checks = []
    for structure in structures:
        units = structure.units(model)

        def one(structure=structure, units=units):
            state = _state(model)
            scores = criterion.scores(model, structure, units, CriterionContext(x, labels, seed=0))
            if not _same_state(model, state):
                return "the model's parameters changed"
            if len(scores) != len(units):
                return f"{len(scores)} scores for {len(units)} units"
            bad = [s for s in scores if not isinstance(s, (int, float)) or not math.isfinite(s)]
            if bad:
                return f"scores must be finite numbers; got {bad[0]!r}"
            again = criterion.scores(model, structure, units, CriterionContext(x, labels, seed=0))
            if list(again) != list(scores):
                return "the same seed gave different scores"

        checks.append((f"scores on {structure.name}", one))
    return _checks(checks)


# ---------------------------------------------------------------- evaluators
def check_evaluator(evaluator, model: nn.Module | None = None, ctx=None) -> Problems:
    """An evaluator on a model (default: a seeded ResNet-20 on 64 random CIFAR-shaped images):
    a JSON-able dict whose top-level numbers are finite."""
    model = model if model is not None else _default_model()
    if ctx is None:
        g = torch.Generator().manual_seed(2)
        split = TensorSplit(torch.rand(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
        data = DataSplits(split, split, split, (0.5,) * 3, (0.25,) * 3, 10, val=split)
        options = {o.name: o.default for o in getattr(evaluator, "options", ()) or ()}
        ctx = EvalContext(data, torch.device("cpu"), options, 0, tempfile.gettempdir(), 0)

    def runs():
        result = evaluator.evaluate(model, ctx)
        if not isinstance(result, dict):
            return f"returned {type(result).__name__}, not a dict"
        json.dumps(result, allow_nan=False)
        bad = [k for k, v in result.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            return f"non-finite numbers for {', '.join(bad)}"

    return _checks([("evaluate", runs)])


# ---------------------------------------------------------------- any kind
def check_interface(plugin, kind: str) -> Problems:
    """What a plugin of any kind keeps: a name; every member its kind's interface
    (harness.api) leaves to plugins, those that raise NotImplementedError there; options with
    distinct names; and ``configure`` with their defaults. `harness check-plugin` runs it on the
    plugins of a kind that has no check of its own (a new kind)."""
    interface = getattr(api, kind_named(kind).interface)
    options = list(getattr(plugin, "options", ()) or ())

    def named():
        if not isinstance(getattr(plugin, "name", None), str) or not plugin.name:
            return "a plugin needs a name (non-empty text)"

    def members():
        missing = [m for m in left_to_plugins(interface)
                   if not callable(getattr(plugin, m, None)) or getattr(type(plugin), m, None) is getattr(interface, m)]
        if missing:
            return f"does not implement {', '.join(missing)} (harness.api.{interface.__name__})"

    def distinct():
        names = [o.name for o in options]
        if len(set(names)) != len(names):
            return f"declares an option twice: {sorted({n for n in names if names.count(n) > 1})}"

    def configure():
        if hasattr(plugin, "configure"):
            plugin.configure({o.name: o.default for o in options})

    return _checks([("name", named), ("interface", members), ("options", distinct), ("configure", configure)])


def left_to_plugins(interface: type) -> list[str]:
    """The members of an interface that raise NotImplementedError there: a plugin must have its own."""
    return [name for name in dir(interface) if (not name.startswith("_") or name == "__call__")
            and inspect.isfunction(getattr(interface, name))
            and "NotImplementedError" in getattr(interface, name).__code__.co_names]


def check_for(kind: str) -> Callable[..., Problems]:
    """The conformance check of a kind: its own (``Kind.conformance``), else :func:`check_interface`."""
    own = kind_named(kind).conformance
    return globals()[own] if own else functools.partial(check_interface, kind=kind)


#: the check of every kind, by kind (harness.kinds names each kind's own)
CHECKS = {kind.name: check_for(kind.name) for kind in KINDS}
