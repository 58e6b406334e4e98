"""Physical removal: rebuild a network from a changed architecture spec and carry the
surviving weights over. Structures decide *what* goes; this module only moves tensors."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

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
