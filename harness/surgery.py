"""Physical removal: rebuild a network from a changed architecture spec and carry the
surviving weights over. Structures decide *what* goes; this module only moves tensors."""

from __future__ import annotations

import copy
import warnings
import weakref
from typing import Mapping, Sequence

import torch
from torch import nn

from harness.measure import evaluating  # structures take it from here
from harness.models import build_from_arch

# old parameter name -> [(dim, indices to keep), ...]
Slices = Mapping[str, Sequence[tuple[int, torch.Tensor]]]


def rebuild(model: nn.Module, arch: dict, slices: Slices | None = None,
            rename: Mapping[str, str] | None = None) -> nn.Module:
    """A new network built from ``arch`` whose every tensor is taken from ``model``.

    ``rename`` maps module prefixes of the new network to the old one's (``layer1.1.`` ->
    ``layer1.2.`` after ``layer1.1`` was removed); ``slices`` keeps only some indices of
    old tensors along a dimension (the surviving filters of a convolution, the rows of a
    head's query, key and value). Any shape that still disagrees is a bug in the caller.
    """
    slices, rename = slices or {}, rename or {}
    prefixes = sorted(rename, key=len, reverse=True)
    new = build_from_arch(arch)
    old_state = model.state_dict()
    state = {}
    for key, target in new.state_dict().items():
        old_key = key
        for prefix in prefixes:
            if key.startswith(prefix):
                old_key = rename[prefix] + key[len(prefix):]
                break
        src = old_state[old_key]
        for dim, idx in slices.get(old_key, ()):
            src = src.index_select(dim, idx.to(src.device))
        if src.shape != target.shape:
            raise RuntimeError(f"surgery bug: {key} (from {old_key}) has shape {tuple(src.shape)}, "
                               f"expected {tuple(target.shape)}")
        state[key] = src.clone()
    new.load_state_dict(state)
    new.train(model.training)
    return new.to(next(model.parameters()).device)


def renumber(old_sites: Sequence[str], kept: Sequence[str], new_sites: Sequence[str]) -> dict[str, str]:
    """The ``rename`` map after removing blocks: the i-th kept old site becomes the i-th
    new site (both as module prefixes with a trailing dot)."""
    assert len(kept) == len(new_sites), (kept, new_sites)
    return {new + ".": old + "." for new, old in zip(new_sites, kept) if new != old}


def keep_indices(size: int, drop, device=None) -> torch.Tensor:
    drop = set(drop)
    kept = [i for i in range(size) if i not in drop]
    if not kept:
        raise ValueError(f"cannot remove all {size} units of a site")
    return torch.tensor(kept, dtype=torch.long, device=device)


@torch.no_grad()
def zero_(tensor: torch.Tensor, index=slice(None), dim: int = 0):
    """Zero part of a parameter in place; returns a function that restores it."""
    view = tensor.data if dim == 0 else tensor.data.transpose(0, dim)
    saved = view[index].clone()
    view[index] = 0

    def restore():
        view[index] = saved

    return restore


# ---------------------------------------------------------------- traced networks
# Networks without an architecture spec (MobileNetV2, ConvNeXt, a user's own nn.Module) are
# changed in place on a copy instead: channel groups through Torch-Pruning's dependency graph,
# blocks by the identity. Each change is logged as an operation, and a fresh network replays
# the log (:func:`replay`) before loading weights, so no pickled code is ever needed.
#
# Operations: {"channels": {site: [indices]}} removes those output channels of each site (a
# convolution or linear layer) and every channel coupled to them; {"blocks": [sites]} replaces
# those modules by the identity.

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


_GRAPHS = PerModel(keep=4)  # a parent and its candidates


def dependency_graph(model: nn.Module, input_shape: Sequence[int]):
    """Torch-Pruning's dependency graph of ``model``, traced once per model object."""
    def trace():
        import torch_pruning as tp

        example = torch.zeros((1, *input_shape), device=next(model.parameters()).device)
        # tracing runs a forward pass: in eval mode, so batch-norm statistics do not move
        with evaluating(model), torch.enable_grad(), warnings.catch_warnings():
            # ConvNeXt's layer scales are parameters outside any layer: Torch-Pruning prunes them
            # along their one dimension, which is right, and warns about it every time
            warnings.filterwarnings("ignore", message="Unwrapped parameters")
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)

    return _GRAPHS.get(model, trace)


def channel_group_sites(model: nn.Module, input_shape: Sequence[int], ignored: Sequence[str] = ()) -> dict[str, int]:
    """``{site: channels}``: one entry per group of coupled channels (a convolution's filters
    with their batch norms, depthwise convolutions, residual sums and the next layers'
    inputs), named by the layer Torch-Pruning roots it at. ``ignored`` layers (the classifier)
    keep their outputs."""
    graph = dependency_graph(model, input_shape)
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    groups = graph.get_all_groups(ignored_layers=[modules[n] for n in ignored],
                                  root_module_types=[nn.Conv2d, nn.Linear])
    return {names[id(g[0].dep.target.module)]: len(g[0].idxs) for g in groups}


def channel_group(model: nn.Module, input_shape: Sequence[int], site: str, indices: Sequence[int]):
    """The Torch-Pruning group of those output channels of ``site`` and everything coupled to them."""
    graph = dependency_graph(model, input_shape)
    layer = model.get_submodule(site)
    return graph.get_pruning_group(layer, graph.get_pruner_of_module(layer).prune_out_channels, list(indices))


def channel_group_slices(group) -> list[tuple[nn.Module | None, torch.Tensor, int, list[int]]]:
    """``[(layer, tensor, dim, indices)]``: the parameters a group's channels own, along the
    dimension Torch-Pruning would cut: outputs of layers and normalisations, inputs of the
    layers that read them (a grouped convolution's inputs go with its outputs). ``layer`` is
    None for a parameter outside any layer (ConvNeXt's layer scale)."""
    out = []
    for item in group:
        target, how, idx = item.dep.target.module, item.dep.handler.__name__, list(item.idxs)
        if isinstance(target, nn.Parameter):
            out.append((None, target, getattr(item.dep.handler.__self__, "pruning_dim", 0), idx))
            continue
        weight, bias = getattr(target, "weight", None), getattr(target, "bias", None)
        if not isinstance(weight, torch.Tensor):
            continue
        transposed = bool(getattr(target, "transposed", False))
        if how == "prune_out_channels":
            out.append((target, weight, 1 if transposed else 0, idx))
            if isinstance(bias, torch.Tensor):
                out.append((target, bias, 0, idx))
        elif how == "prune_in_channels" and getattr(target, "groups", 1) == 1 and weight.dim() >= 2:
            out.append((target, weight, 0 if transposed else 1, idx))
    return out


def prune_channel_groups(model: nn.Module, input_shape: Sequence[int], drop: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``model`` without those output channels of each site and everything coupled
    to them (Torch-Pruning cuts the tensors; the copy is really smaller)."""
    new = copy.deepcopy(model)
    for site, indices in drop.items():
        channel_group(new, input_shape, site, sorted(indices)).prune()
    _GRAPHS.forget(new)  # traced before the cut: shapes changed
    return new


def replace_blocks(model: nn.Module, sites: Sequence[str]) -> nn.Module:
    """A copy of ``model`` with those modules replaced by the identity (residual blocks whose
    shortcut is the identity: what is left when the branch goes)."""
    new = copy.deepcopy(model)
    for site in sites:
        parent, _, name = site.rpartition(".")
        setattr(new.get_submodule(parent) if parent else new, name, nn.Identity())
    return new


def replay(model: nn.Module, input_shape: Sequence[int], operations: Sequence[Mapping]) -> nn.Module:
    """``model`` after the logged operations, in order (see above): a fresh network turned
    into the pruned one's shape, ready for its weights-only state dict."""
    for op in operations:
        if "channels" in op:
            model = prune_channel_groups(model, input_shape, op["channels"])
        elif "blocks" in op:
            model = replace_blocks(model, op["blocks"])
        else:
            raise ValueError(f"unknown surgery operation {sorted(op)}; valid choices: channels, blocks")
    return model
