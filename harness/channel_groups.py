"""Channel groups of traced networks, through Torch-Pruning's dependency graph: which groups
there are, in what steps their channels leave (a grouped convolution's in multiples of its
groups, as Torch-Pruning's own pruner takes them), the tensor slices a step owns, what a step
saves (FLOPs, parameters, filters) read off the layers' shapes, and the cut itself."""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import math
import traceback
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from harness.errors import HarnessError, first_line
from harness.measure import evaluating


class PerModel:
    """What was computed about a model object, kept while that object lives (at most ``keep``
    models: a cached value may hold its model, as a dependency graph does). Weights may change
    in place; a changed structure is a new model, so the cache follows objects."""

    def __init__(self, keep: int):
        self.keep = keep
        self.entries: dict[int, tuple] = {}  # id(model) -> (weak reference to it, value)

    def get(self, model: nn.Module, compute):
        entry = self.entries.get(id(model))
        if entry is not None and entry[0]() is model:
            return entry[1]
        value = compute()
        self.entries = {k: e for k, e in self.entries.items() if e[0]() is not None}
        self.entries[id(model)] = (weakref.ref(model), value)
        while len(self.entries) > self.keep:
            del self.entries[next(iter(self.entries))]
        return value

    def forget(self, model: nn.Module) -> None:
        self.entries.pop(id(model), None)


@contextlib.contextmanager
def untouched(model: nn.Module):
    """Whatever runs inside leaves ``model`` as it was: every module's mode, every buffer (the
    batch-norm statistics a train-mode pass moves) and the random state (dropout)."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    device = next(model.parameters()).device
    with evaluating(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield model
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)


def outputs_of(model: nn.Module, x: torch.Tensor):
    """Everything the network returns, training-only outputs included (``forward_all`` when it
    has one: a traced network's ``forward`` keeps the logits alone)."""
    return getattr(model, "forward_all", model)(x)


_TRAIN_ONLY = PerModel(keep=8)


def training_only(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Modules that run in train mode only (GoogLeNet's and Inception-v3's auxiliary
    classifiers), outermost ones, found by running both modes on two zero inputs."""
    def find():
        modules = dict(model.named_modules())
        called = {True: set(), False: set()}
        mode = [False]
        hooks = [m.register_forward_pre_hook(lambda m, a, n=name: called[mode[0]].add(n))
                 for name, m in modules.items() if name]
        x = torch.zeros((2, *input_shape), device=next(model.parameters()).device)
        try:
            with untouched(model), torch.no_grad():
                for mode[0] in (False, True):
                    model.train(mode[0])
                    outputs_of(model, x)
        finally:
            for h in hooks:
                h.remove()
        only = called[True] - called[False]
        return sorted(n for n in only if n.rpartition(".")[0] not in only)

    return _TRAIN_ONLY.get(model, find)


_GRAPHS = PerModel(keep=4)  # a parent and its candidates


def _torch_pruning_version() -> str:
    # the package's own __version__ lags its release (pip's 1.6.1 says 1.6.0)
    try:
        return importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:
        import torch_pruning as tp

        return tp.__version__


def _cannot_trace(model: nn.Module, why: str) -> HarnessError:
    net = getattr(model, "net", model)
    return HarnessError(f"Torch-Pruning {_torch_pruning_version()} cannot trace the channels of {type(net).__name__}: "
                        f"{why}: no width candidate can be built (--structures layer prunes residual blocks "
                        "alone, where the network has them)")


def _gathered_position_bias(model: nn.Module) -> str | None:
    """The first buffer through which attention gathers a relative-position bias by index (Swin
    V1 and V2, MaxViT, timm's Swin), or None."""
    return next((name for name, _ in model.named_buffers() if name.rpartition(".")[2] == "relative_position_index"), None)


def dependency_graph(model: nn.Module, input_shape: Sequence[int]):
    """Torch-Pruning's dependency graph of ``model``, traced once per model object: in eval mode,
    or in train mode (batch-norm statistics restored) when some branch runs only there, so that
    the branch is pruned with the layers it reads."""
    def trace():
        import torch_pruning as tp

        # refused before tracing: on these Torch-Pruning's grouping fills the memory (Swin V2,
        # MaxViT: over 12 GB at 64x64 in benchmarks/zoo.py) or cuts channels the bias table
        # does not follow (timm's Swin), and where memory is not capped the system kills the process
        gathered = _gathered_position_bias(model)
        if gathered:
            raise _cannot_trace(model, f"its attention adds a relative-position bias gathered by index ({gathered}), "
                                       "which Torch-Pruning's index mapping cannot follow")
        train = bool(training_only(model, input_shape))
        example = torch.zeros((2 if train else 1, *input_shape), device=next(model.parameters()).device)

        def forward(m, x):
            m.train(train)  # Torch-Pruning puts the model in eval mode before this
            return outputs_of(m, x)

        with untouched(model), torch.enable_grad(), warnings.catch_warnings():
            # ConvNeXt's layer scales are parameters outside any layer: Torch-Pruning prunes them
            # along their one dimension, which is right, and warns about it every time
            warnings.filterwarnings("ignore", message="Unwrapped parameters")
            # its shape inference giving up: the grouping that follows then runs for many
            # minutes and fills the memory
            warnings.filterwarnings("error", message="Maximum recursive depth reached")
            try:
                return tp.DependencyGraph().build_dependency(model, example_inputs=example, forward_fn=forward)
            except Exception as exc:  # noqa: BLE001 - any failure inside Torch-Pruning: one line, not its stack
                where = traceback.extract_tb(exc.__traceback__)[-1]
                raise _cannot_trace(model, f"{type(exc).__name__} in its {where.name} ({first_line(exc)})") from None

    return _GRAPHS.get(model, trace)


# ---------------------------------------------------------------- sites
@dataclass
class Piece:
    """One tensor a group cuts: ``kind`` "out" (a layer's outputs, a normalisation, a bare
    parameter), "in" (a layer's inputs) or "grouped-in" (a grouped convolution's inputs, whose
    weight holds ``in / groups`` columns); ``roots[k]`` is the group's channel that index
    ``idx[k]`` of ``dim`` belongs to."""

    layer: nn.Module | None  # None: a parameter outside any layer (ConvNeXt's layer scale)
    tensor: torch.Tensor
    dim: int
    kind: str
    idx: list[int]
    roots: list[int]
    by_root: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self):
        for i, r in zip(self.idx, self.roots):
            self.by_root.setdefault(r, []).append(i)

    def indices(self, channels: Sequence[int]) -> list[int]:
        return [i for c in channels for i in self.by_root.get(c, ())]


@dataclass
class ChannelSite:
    """A group of coupled channels, named by the layer it is rooted at. Its channels leave
    ``step`` at a time: unit ``j`` is channels ``j, j + n, ..., j + (step - 1) n`` with
    ``n = channels / step``, one in each group of the grouped convolutions it touches, so every
    group keeps the same width (``step`` is 1 without grouped convolutions)."""

    channels: int
    step: int
    pieces: list[Piece]

    @property
    def units(self) -> int:
        return self.channels // self.step

    def channels_of(self, units: Sequence[int]) -> list[int]:
        n = self.units
        return sorted(u + g * n for u in units for g in range(self.step))


def _piece(item) -> Piece | None:
    target, how = item.dep.target.module, item.dep.handler.__name__
    idx = [int(i) for i in item.idxs]
    roots = [int(i) for i in (item.root_idxs or item.idxs)]
    if isinstance(target, nn.Parameter):  # the dimension Torch-Pruning found for it (its last non-singleton one)
        return Piece(None, target, item.dep.target.pruning_dim % target.dim(), "out", idx, roots)
    weight = getattr(target, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    transposed = bool(getattr(target, "transposed", False))
    if how == "prune_out_channels":
        return Piece(target, weight, 1 if transposed else 0, "out", idx, roots)
    if how == "prune_in_channels" and weight.dim() >= 2:
        kind = "in" if getattr(target, "groups", 1) == 1 else "grouped-in"
        return Piece(target, weight, 0 if transposed else 1, kind, idx, roots)
    return None


def _step(graph, group) -> int:
    """How many channels of the group leave together: Torch-Pruning's channel groups of the
    layers it touches (a grouped convolution's or group norm's groups; a depthwise convolution's
    channels go one by one), their least common multiple."""
    step = 1
    for item in group:
        module = item.dep.target.module
        pruner = graph.get_pruner_of_module(module) if isinstance(module, nn.Module) else None
        if pruner is None or (isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels):
            continue
        out = graph.is_out_channel_pruning_fn(item.dep.handler)
        step = math.lcm(step, int((pruner.get_out_channel_groups if out else pruner.get_in_channel_groups)(module)))
    return step


def _reaches_output(graph, group) -> bool:
    """Whether cutting the group would change the network's output: an output (the logits of a
    classifier, a 1x1 convolution's class maps) is in it."""
    return any(not item.dep.target.outputs and graph.is_out_channel_pruning_fn(item.dep.handler) for item in group)


_SITES = PerModel(keep=4)


def channel_sites(model: nn.Module, input_shape: Sequence[int], ignored: Sequence[str] = ()) -> dict[str, ChannelSite]:
    """``{site: ChannelSite}``, one per group of coupled channels (a convolution's filters with
    their batch norms, depthwise convolutions, residual sums and the next layers' inputs), named
    by the layer Torch-Pruning roots it at. ``ignored`` layers keep their outputs, and so does
    every layer whose outputs are the network's (the classifier, an auxiliary classifier)."""
    def find():
        graph = dependency_graph(model, input_shape)
        modules = dict(model.named_modules())
        names = {id(m): n for n, m in modules.items()}
        sites = {}
        for g in graph.get_all_groups(ignored_layers=[modules[n] for n in ignored],
                                      root_module_types=[nn.Conv2d, nn.Linear]):
            if _reaches_output(graph, g):
                continue
            channels, step = len(g[0].idxs), _step(graph, g)
            if channels % step:
                continue
            sites[names[id(g[0].dep.target.module)]] = ChannelSite(
                channels, step, [p for p in map(_piece, g) if p is not None])
        return sites

    return _SITES.get(model, find)


def layer_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[nn.Module, float]:
    """FLOPs of each convolution and linear layer on one input in eval mode, as
    torch.utils.flop_counter counts them (2 per multiply-add: ``2 * outputs * weight[0].numel()``)."""
    flops: dict[nn.Module, float] = {}

    def hook(module, args, out):
        if isinstance(out, torch.Tensor):
            flops[module] = flops.get(module, 0.0) + 2.0 * out.numel() * module.weight[0].numel()

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    hooks = [m.register_forward_hook(hook) for m in layers]
    try:
        with evaluating(model), torch.no_grad():
            model(torch.zeros((1, *input_shape), device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return flops


def unit_prices(model: nn.Module, input_shape: Sequence[int], sites: Mapping[str, ChannelSite],
                measure: str) -> dict[str, float]:
    """What removing one unit of each site saves, read off the layers' shapes: ``flops``
    (convolutions and linear layers, as :func:`harness.measure.count_flops` counts them; FLOPs
    are linear in each layer's inputs and outputs, so this is exactly what cutting one unit
    saves), ``params`` or ``filters`` (convolution outputs)."""
    if measure not in ("flops", "params", "filters"):
        raise ValueError(f"unknown measure {measure!r}; valid choices: flops, params, filters")
    flops = layer_flops(model, input_shape) if measure == "flops" else {}
    prices = {}
    for name, site in sites.items():
        total = 0.0
        for p in site.pieces:
            per_unit = len(p.idx) / site.units  # this tensor's indices one unit cuts
            layer = p.layer
            if measure == "flops":
                if layer in flops:
                    width = layer.weight.shape[0 if p.kind == "out" else 1] * (layer.groups if p.kind == "grouped-in" else 1)
                    total += flops[layer] * per_unit / width
            elif measure == "filters":
                total += per_unit if p.kind == "out" and isinstance(layer, nn.Conv2d) else 0
            else:
                share = p.tensor.numel() / p.tensor.shape[p.dim] * per_unit
                total += share / (layer.groups if p.kind == "grouped-in" else 1)
                bias = getattr(layer, "bias", None) if p.kind == "out" else None
                total += per_unit if isinstance(bias, torch.Tensor) else 0
        prices[name] = total
    return prices


def prune_channel_groups(model: nn.Module, input_shape: Sequence[int], drop: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``model`` without those output channels of each site and everything coupled
    to them (Torch-Pruning cuts the tensors; the copy is really smaller)."""
    new = copy.deepcopy(model)
    graph = dependency_graph(new, input_shape)
    for site, indices in drop.items():
        layer = new.get_submodule(site)
        graph.get_pruning_group(layer, graph.get_pruner_of_module(layer).prune_out_channels, sorted(indices)).prune()
    for cache in (_GRAPHS, _SITES, _TRAIN_ONLY):  # traced before the cut: shapes changed
        cache.forget(new)
    return new
