"""Structures of residual networks: whole blocks (``layer``) and the inner filters of a
block (``filter``). They list, ablate and physically remove units; how important a unit
is belongs to the criteria, not here.

Both work on any network with ``arch`` (see plugins/models.py), ``blocks()`` yielding
(site, block) pairs whose blocks have conv1/bn1/conv2/bn2, and a registered model family
that rebuilds the network from a changed ``arch``.
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from typing import Sequence

import torch
from torch import nn

from harness import hookimpl
from harness.api import Structure, Unit
from harness.models import build_from_arch


def _stage_block(site: str) -> tuple[int, int]:
    stage, index = site.removeprefix("layer").split(".")
    return int(stage) - 1, int(index)


def _zero_bn(bn: nn.BatchNorm2d, channels=slice(None)):
    """Zero a batch norm's affine output for some channels; return what to restore."""
    saved = (bn.weight.data[channels].clone(), bn.bias.data[channels].clone())
    bn.weight.data[channels] = 0
    bn.bias.data[channels] = 0
    return saved


def _rebuild(model: nn.Module, arch: dict, site_map: dict[str, str], keep: dict[str, torch.Tensor]):
    """Build ``arch`` and fill it from ``model``: ``site_map`` maps each new block site to the
    old one; ``keep`` gives, per old site, the inner channels that survive."""
    new = build_from_arch(arch)
    old_state = model.state_dict()
    state = {}
    for key, target in new.state_dict().items():
        site = ".".join(key.split(".")[:2])
        if site in site_map:
            old_site = site_map[site]
            src = old_state[old_site + key[len(site):]]
            idx = keep.get(old_site)
            if idx is not None:
                param = key[len(site) + 1:]
                if param.startswith("conv1.") or (param.startswith("bn1.") and src.dim() == 1):
                    src = src[idx]
                elif param.startswith("conv2."):
                    src = src[:, idx]
        else:
            src = old_state[key]
        if src.shape != target.shape:
            raise RuntimeError(f"surgery bug: {key} has shape {tuple(src.shape)}, expected {tuple(target.shape)}")
        state[key] = src.clone()
    new.load_state_dict(state)
    new.train(model.training)
    return new.to(next(model.parameters()).device)


def _supports(model) -> bool:
    return hasattr(model, "blocks") and hasattr(model, "arch") and model.arch.get("family") == "cifar_resnet"


class LayerStructure(Structure):
    """Residual blocks whose input and output shapes match; removing one leaves its
    shortcut (the identity), so zeroing the block's residual branch is an exact ablation."""

    name = "layer"

    def supports(self, model):
        return _supports(model)

    def units(self, model):
        return [Unit(self.name, site) for site, block in model.blocks() if block.identity_shortcut]

    @contextlib.contextmanager
    def ablate(self, model, units: Sequence[Unit]):
        blocks = dict(model.blocks())
        saved = [(blocks[u.site].bn2, _zero_bn(blocks[u.site].bn2)) for u in units]
        try:
            yield model
        finally:
            for bn, (w, b) in saved:
                bn.weight.data.copy_(w)
                bn.bias.data.copy_(b)

    def remove(self, model, units: Sequence[Unit]):
        drop = {u.site for u in units}
        blocks = dict(model.blocks())
        for site in drop:
            if site not in blocks or not blocks[site].identity_shortcut:
                raise ValueError(f"block {site} cannot be removed")
        arch = copy.deepcopy(model.arch)
        site_map = {}
        for s, stage in enumerate(model.arch["stages"]):
            kept = [i for i in range(len(stage["blocks"])) if f"layer{s + 1}.{i}" not in drop]
            arch["stages"][s]["blocks"] = [stage["blocks"][i] for i in kept]
            site_map.update({f"layer{s + 1}.{j}": f"layer{s + 1}.{i}" for j, i in enumerate(kept)})
        return _rebuild(model, arch, site_map, keep={})

    def weights(self, model, unit):
        block = dict(model.blocks())[unit.site]
        return [block.conv1.weight, block.conv2.weight]


class FilterStructure(Structure):
    """Output channels of a block's inner convolution (conv1 and bn1, with the matching
    input channels of conv2). A block keeps at least one filter."""

    name = "filter"

    def supports(self, model):
        return _supports(model)

    def units(self, model):
        return [
            Unit(self.name, site, c)
            for site, block in model.blocks()
            if block.conv1.out_channels > 1
            for c in range(block.conv1.out_channels)
        ]

    @contextlib.contextmanager
    def ablate(self, model, units: Sequence[Unit]):
        # bn1's affine output zeroed => relu(0) = 0 => the channel feeds nothing to conv2
        by_site = defaultdict(list)
        for u in units:
            by_site[u.site].append(u.index)
        blocks = dict(model.blocks())
        saved = []
        for site, idx in by_site.items():
            bn = blocks[site].bn1
            saved.append((bn, idx, _zero_bn(bn, idx)))
        try:
            yield model
        finally:
            for bn, idx, (w, b) in saved:
                bn.weight.data[idx] = w
                bn.bias.data[idx] = b

    def remove(self, model, units: Sequence[Unit]):
        by_site = defaultdict(set)
        for u in units:
            by_site[u.site].add(u.index)
        blocks = dict(model.blocks())
        arch = copy.deepcopy(model.arch)
        keep = {}
        for site, drop in by_site.items():
            width = blocks[site].conv1.out_channels
            kept = [c for c in range(width) if c not in drop]
            if not kept:
                raise ValueError(f"cannot remove all {width} filters of block {site}")
            keep[site] = torch.tensor(kept, device=blocks[site].conv1.weight.device)
            s, i = _stage_block(site)
            arch["stages"][s]["blocks"][i][0] = len(kept)
        site_map = {site: site for site, _ in model.blocks()}
        return _rebuild(model, arch, site_map, keep)

    def weights(self, model, unit):
        return [dict(model.blocks())[unit.site].conv1.weight[unit.index]]


@hookimpl
def register_structures():
    return [LayerStructure(), FilterStructure()]
