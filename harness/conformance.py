"""The conformance kit for the kinds whose plugins make or decide rather than measure: model
families (build, spec, reload, replay), data sets (shapes, disjoint splits) and methods (a
decision among the candidates given, nothing trained twice, no test data read). Plugin
authors take them from :mod:`harness.testing`, which also holds the other kinds' checks."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import random
import tempfile
from typing import Any, Callable

import torch
from torch import nn

from harness import registry
from harness.api import Candidate, DataSplits, Step, TensorSplit
from harness.config import BenchConfig
from harness.errors import HarnessError, first_line
from harness.structure_types import choose_structures, structure_type
from harness.training import evaluate, predict

Problems = list[str]


def run_checks(checks: list[tuple[str, Callable[[], str | None]]]) -> Problems:
    """Runs each (what, check): a check returns None when it holds or a reason; one that
    raises fails with what it raised."""
    problems = []
    for what, check in checks:
        try:
            reason = check()
        except Exception as exc:  # a plugin that crashes a check fails it
            reason = f"raised {type(exc).__name__}: {first_line(exc)}"
        if reason:
            problems.append(f"{what}: {reason}")
    return problems


def seeded_statistics(model: nn.Module) -> nn.Module:
    """Random batch-norm statistics and affine parameters, seeded: no unit is trivially dead."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_((torch.rand(m.bias.shape, generator=g) - 0.5) * 0.4)
    return model.eval()


def model_named(name: str, num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32)) -> nn.Module:
    """A seeded network of the registered model ``name`` to check plugins on."""
    family = registry.get("model", name)
    torch.manual_seed(0)
    return seeded_statistics(family.build(family.default_arch(name, num_classes, tuple(input_shape))))


def structures_for(model: nn.Module, family=None) -> list:
    """The registered structures that prune ``model``, one per type, as a run chooses them
    (``family``: the model's own, default the registered family its spec names)."""
    current = registry.current()
    if family is None:
        family = current.entry("model", model.arch["model"]).obj
    infos = current.of_kind("structure").values()
    package = next((p.package for p in current.of_kind("model").values() if type(p.obj) is type(family)), None)
    types = sorted({structure_type(p.obj) for p in infos})
    named = getattr(family, "structure_names", None) or {}
    own = {p.obj.name for p in infos if p.package == package}
    return list(choose_structures([p.obj for p in infos], types, model, named, own).values())


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# ---------------------------------------------------------------- model families
def check_model_family(family, name: str | None = None, num_classes: int = 10,
                       input_shape: tuple[int, ...] = (3, 32, 32)) -> Problems:
    """A model family on the network ``name`` (default: its own name): the spec is JSON and
    names the model (``"model"``: what surgery and reloading build it by); ``build(arch)``
    gives a network with that spec whose outputs have one score per class and whose
    ``forward_features`` is (N, D); the spec and a state dict reload the same network; and a
    network pruned by each structure that supports it reloads from its spec alone."""
    name = name or family.name
    x = torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(1))
    made: dict[str, Any] = {}

    def spec():
        if name.endswith(":"):
            return f"{name} is a prefix: check one of its models (check_model_family(family, '{name}<model>'))"
        if hasattr(family, "check_name"):
            family.check_name(name)
        arch = family.default_arch(name, num_classes, tuple(input_shape))
        made["arch"] = arch
        if not isinstance(arch, dict) or arch.get("model") != name:
            return f"the spec must be a dict holding \"model\": {name!r} (surgery and reloading build by it)"
        if json.loads(json.dumps(arch)) != arch:
            return "the spec does not survive JSON (use lists, str keys and plain numbers)"

    def builds():
        torch.manual_seed(0)
        model = seeded_statistics(family.build(made["arch"]))
        made["model"] = model
        if getattr(model, "arch", None) != made["arch"]:
            return "build(arch) must give a network whose .arch is that spec"
        out = _outputs(model, x)
        if tuple(out.shape) != (len(x), num_classes):
            return f"outputs of shape {tuple(out.shape)} on {len(x)} inputs, not ({len(x)}, {num_classes})"
        if not torch.isfinite(out).all():
            return "non-finite outputs on random inputs"
        with torch.no_grad():
            features = model.forward_features(x)
        if features.dim() != 2 or features.shape[0] != len(x):
            return f"forward_features gives shape {tuple(features.shape)}, not (N, D)"

    def reloads():
        model = made["model"]
        again = family.build(json.loads(json.dumps(model.arch)))
        again.load_state_dict(model.state_dict(), strict=True)
        if not torch.allclose(_outputs(again, x), _outputs(model, x), atol=1e-5):
            return "a network rebuilt from its spec with its state dict gives other outputs"

    def replays():
        model = made["model"]
        structures = structures_for(model, family)
        if not structures:
            return "no registered structure supports it: it cannot be pruned"
        for structure in structures:
            units = structure.units(model)
            if not units:
                continue
            try:
                pruned = structure.remove(model, units[:1]).eval()
            except Exception as exc:
                return (f"pruned by {structure.name}, the smaller spec builds no smaller network "
                        f"({type(exc).__name__}: {first_line(exc, 120)}): build(arch) must follow every key of the spec")
            again = family.build(json.loads(json.dumps(pruned.arch)))
            try:
                again.load_state_dict(pruned.state_dict(), strict=True)
            except RuntimeError as exc:
                return f"pruned by {structure.name}, its spec builds another network ({first_line(exc, 120)})"
            if not torch.allclose(_outputs(again, x), _outputs(pruned, x), atol=1e-5):
                return f"pruned by {structure.name}, the network rebuilt from its spec gives other outputs"

    with _registered(family):  # surgery rebuilds a pruned network through the registry, by its spec
        return run_checks([("spec", spec)]) or run_checks([("build", builds)]) or run_checks(
            [("reload", reloads), ("replay", replays)])


@contextlib.contextmanager
def _registered(family):
    """``family`` registered for the length of a check, unless it is already."""
    try:
        known = type(registry.get("model", family.name)) is type(family)
    except HarnessError:
        known = False
    if known:
        yield
        return
    with registry.temporarily_registered("model", lambda: family, "the family checked"):
        yield


# ---------------------------------------------------------------- data sets
def _digests(split: TensorSplit) -> set[str]:
    rows = split.images.reshape(len(split), -1).contiguous().numpy()
    return {hashlib.sha256(row.tobytes()).hexdigest() for row in rows}


def check_dataset(dataset, data_dir: str | None = None, cache_dir: str | None = None, calib_size: int = 64) -> Problems:
    """A data set's splits: float inputs of one shape with int64 labels in [0, num_classes),
    ``calib_size`` calibration samples, a mean and std per channel (or feature), finite
    numbers; the calibration, validation (when it brings one) and test splits disjoint from
    the training split (at most 1% of a split's samples found in another, for data with
    duplicate samples); and the same splits when loaded again."""
    cache = cache_dir or tempfile.mkdtemp(prefix="harness-check-")
    loaded: dict[str, DataSplits] = {}

    def loads():
        data = dataset.load(data_dir, cache, calib_size)
        if not isinstance(data, DataSplits):
            return f"load() gave a {type(data).__name__}, not DataSplits"
        loaded["data"] = data

    def shapes():
        data = loaded["data"]
        splits = {k: getattr(data, k) for k in ("train", "calib", "test", "val") if getattr(data, k) is not None}
        shape = tuple(data.train.images.shape[1:])
        for key, split in splits.items():
            if not len(split):
                return f"the {key} split is empty"
            if not split.images.is_floating_point() or split.labels.dtype != torch.int64:
                return f"the {key} split holds {split.images.dtype} inputs and {split.labels.dtype} labels, " \
                       "not float inputs and int64 labels"
            if tuple(split.images.shape[1:]) != shape or len(split.images) != len(split.labels):
                return f"the {key} split's inputs are {tuple(split.images.shape)} for {len(split.labels)} labels " \
                       f"(the training split's samples are {shape})"
            if not torch.isfinite(split.images).all():
                return f"the {key} split holds non-finite inputs"
            if int(split.labels.min()) < 0 or int(split.labels.max()) >= data.num_classes:
                return f"the {key} split has labels outside 0..{data.num_classes - 1}"
        if len(data.calib) != calib_size:
            return f"{len(data.calib)} calibration samples, not the {calib_size} asked for"
        channels = shape[0] if len(shape) != 1 else shape[-1]
        if len(data.mean) != channels or len(data.std) != channels:
            return f"mean and std must have one value per channel (or feature): {channels}, not " \
                   f"{len(data.mean)} and {len(data.std)}"
        if not all(math.isfinite(s) and s > 0 for s in data.std):
            return "std must be positive"

    def disjoint():
        data = loaded["data"]
        train = _digests(data.train)
        for key in ("calib", "val", "test"):
            split = getattr(data, key)
            if split is None:
                continue
            shared = len(_digests(split) & train)
            if shared > 0.01 * len(split):
                return f"{shared} of the {len(split)} {key} samples are in the training split too"

    def repeatable():
        again = dataset.load(data_dir, cache, calib_size)
        for key in ("train", "calib", "test"):
            a, b = getattr(loaded["data"], key), getattr(again, key)
            if not (torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)):
                return f"loaded again, the {key} split differs (seed its shuffles)"

    return run_checks([("load", loads)]) or run_checks([("shapes", shapes)]) or run_checks(
        [("disjoint", disjoint), ("repeatable", repeatable)])


# ---------------------------------------------------------------- methods
class _Watched:
    """A run's data as a method sees it, noting every read of the test split."""

    def __init__(self, data: DataSplits, reads: list[str]):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_reads", reads)

    def __getattr__(self, key):
        if key == "test":
            self._reads.append(key)
        return getattr(self._data, key)


def _scenario(wanted, seed: int = 0):
    """A parent (a seeded ResNet-20), its layer and filter candidates of the ``wanted`` types,
    and CIFAR-shaped data."""
    parent = model_named("resnet20")
    g = torch.Generator().manual_seed(seed)

    def split(n):
        return TensorSplit(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))

    data = DataSplits(split(64), split(32), split(32), (0.5,) * 3, (0.25,) * 3, 10, val=split(32))
    candidates = []
    for structure in structures_for(parent):
        if structure_type(structure) not in wanted:
            continue
        units = structure.units(parent)
        chosen = units[:1] if structure_type(structure) == "layer" else units[:4]
        candidates.append(Candidate(structure_type(structure), chosen, structure.remove(parent, chosen)))
    return parent, data, sorted(candidates, key=lambda c: c.type != "layer")


def _decide(method, pretuned: bool) -> tuple[int | None, list[str]]:
    """One decision of ``method`` as the loop asks for it (the candidates fine-tuned first, as
    with decision records, or not); returns the index chosen and the problems seen."""
    cfg = BenchConfig().checked()
    parent, data, candidates = _scenario(list(method.structures(["layer", "filter"])))
    parent_state = copy.deepcopy(parent.state_dict())
    problems, reads, trained = [], [], {}
    metric = registry.get("similarity", "cka")

    def train(model, epochs):
        trained[id(model)] = trained.get(id(model), 0) + 1
        with torch.no_grad():  # a stand-in for training: a small seeded change
            g = torch.Generator().manual_seed(len(trained))
            for p in model.parameters():
                p.add_(1e-3 * torch.randn(p.shape, generator=g))
        return model

    def finetune(model, epochs):
        cand = next((c for c in candidates if c.model is model), None)
        if cand is not None and cand.finetuned_epochs is not None:
            problems.append(f"asks to fine-tune the {cand.type} candidate again (it was fine-tuned for "
                            f"{cand.finetuned_epochs:g} epochs): the loop fine-tunes candidates; call "
                            "step.finetune_candidates, which trains each once")
            return model
        if cand is not None:
            cand.finetuned_epochs = epochs
        return train(model, epochs)

    if pretuned:
        for cand in candidates:
            train(cand.model, cfg.candidate_epochs)
            cand.finetuned_epochs = cfg.candidate_epochs
    features = lambda m: predict(m, data.calib, data, "cpu", features=True)  # noqa: E731
    step = Step(iteration=1, parent=parent, config=cfg, rng=random.Random(0), finetune=finetune,
                similarity=lambda p, c: float(metric(features(p), features(c))),
                finetune_all=lambda ms, epochs, tags=None: [finetune(m, epochs) for m in ms],
                validation=lambda m: evaluate(m, data.val, data, "cpu"), data=_Watched(data, reads),
                features=features, device=torch.device("cpu"))
    chosen = method.select(step, candidates)
    index = next((i for i, c in enumerate(candidates) if c is chosen), None)
    if index is None:
        problems.append(f"select() returned {type(chosen).__name__}, not one of the candidates it was given")
    twice = [c.type for c in candidates if trained.get(id(c.model), 0) > 1]
    if twice:
        problems.append(f"the {', '.join(twice)} candidate was trained twice")
    if reads:
        problems.append("read the test split (step.data.test): decisions read step.data.val")
    if any(not torch.equal(v, parent_state[k]) for k, v in parent.state_dict().items()):
        problems.append("changed the parent (step.parent): fine-tune candidates, never the parent")
    return index, problems


def check_method(method) -> Problems:
    """A method on a layer and a filter candidate of a seeded ResNet-20 (the training a stand-in):
    it returns one of the candidates it was given, trains none twice (with candidates the loop
    fine-tuned first, as with decision records, and without), reads no test data, leaves the
    parent as it was, and decides the same given the same random state."""
    found: dict[str, Any] = {}

    def each(pretuned: bool):
        def check():
            index, problems = _decide(method, pretuned)
            found[pretuned] = index
            return "; ".join(problems) or None
        return check

    def repeatable():
        if None in found.values() or len(found) < 2:
            return None
        again, _ = _decide(method, True)
        if again != found[True]:
            return "the same candidates and random state gave another decision"

    def offered():
        wanted = list(method.structures(["layer", "filter"]))
        if not wanted or not set(wanted) <= {"layer", "filter"}:
            return f"structures(['layer', 'filter']) gave {wanted!r}: some of the types offered, in their order"

    return run_checks([("structures", offered)]) or run_checks([("with the candidates fine-tuned", each(True)),
                       ("with the candidates not yet fine-tuned", each(False)), ("repeatable", repeatable)])
