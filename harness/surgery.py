"""Physical removal: rebuild a network from a changed architecture spec and carry the
surviving weights over. Structures decide *what* goes; this module only moves tensors."""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
from torch import nn

# structures take these from here
from harness.channel_groups import (PerModel, channel_sites, dependency_graph, prune_channel_groups,  # noqa: F401
                                     unit_prices)
from harness.measure import evaluating  # noqa: F401
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
