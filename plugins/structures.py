"""Structures of residual networks: whole blocks (type ``layer``) and the output
channels of inner convolutions (type ``filter``). They list, ablate and physically remove
units; how important a unit is belongs to the criteria, not here.

They work on any network that follows the residual-network protocol (CIFAR ResNets,
torchvision ResNets): ``arch``, ``blocks()``, ``removable_blocks()``,
``residual_bn(site)``, ``width_sites()``, ``arch_without_blocks(sites)`` and
``arch_with_widths({site: width})``; see ``CifarResNet`` in plugins/models.py.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Sequence

from harness import hookimpl
from harness.api import Structure, Unit
from harness.surgery import keep_indices, rebuild, zero_

PROTOCOL = ("removable_blocks", "residual_bn", "width_sites", "arch_without_blocks", "arch_with_widths")


def _is_residual_network(model) -> bool:
    return hasattr(model, "arch") and all(hasattr(model, name) for name in PROTOCOL)


@contextlib.contextmanager
def _restoring(restores):
    try:
        yield
    finally:
        for restore in reversed(restores):
            restore()


class ResidualBlocks(Structure):
    """Residual blocks whose input and output shapes match. Removing one leaves its
    shortcut, the identity, so zeroing the last batch norm of its residual branch is an
    exact ablation."""

    name = "resnet-block"
    type = "layer"

    def supports(self, model):
        return _is_residual_network(model)

    def units(self, model):
        return [Unit(self.name, site) for site in model.removable_blocks()]

    def ablate(self, model, units: Sequence[Unit]):
        restores = []
        for u in units:
            bn = model.residual_bn(u.site)
            restores += [zero_(bn.weight), zero_(bn.bias)]
        return _restoring(restores)

    def remove(self, model, units: Sequence[Unit]):
        drop = {u.site for u in units}
        bad = drop - set(model.removable_blocks())
        if bad:
            raise ValueError(f"block(s) {', '.join(sorted(bad))} cannot be removed")
        arch, rename = model.arch_without_blocks(drop)
        return rebuild(model, arch, rename=rename)

    def weights(self, model, unit):
        block = dict(model.blocks())[unit.site]
        return [m.weight for m in block.modules() if hasattr(m, "kernel_size")]


class ConvFilters(Structure):
    """Output channels of a block's inner convolutions, with their batch-norm channels and
    the matching input channels of the convolution that consumes them."""

    name = "resnet-filter"
    type = "filter"

    def supports(self, model):
        return _is_residual_network(model)

    def units(self, model):
        return [Unit(self.name, site, c) for site, conv, _, _ in model.width_sites()
                if conv.out_channels > 1 for c in range(conv.out_channels)]

    def ablate(self, model, units: Sequence[Unit]):
        # the batch norm's affine output zeroed => relu(0) = 0 => the channel feeds nothing on
        sites = {site: bn for site, _, bn, _ in model.width_sites()}
        restores = []
        for site, idx in _by_site(units).items():
            index = list(idx)
            restores += [zero_(sites[site].weight, index), zero_(sites[site].bias, index)]
        return _restoring(restores)

    def remove(self, model, units: Sequence[Unit]):
        names = {id(m): n for n, m in model.named_modules()}
        sites = {site: (conv, bn, nxt) for site, conv, bn, nxt in model.width_sites()}
        slices, widths = {}, {}
        for site, drop in _by_site(units).items():
            conv, bn, nxt = sites[site]
            idx = keep_indices(conv.out_channels, drop)
            widths[site] = len(idx)
            for key in _params(names[id(conv)], conv) + _params(names[id(bn)], bn):
                slices[key] = [(0, idx)]
            slices[names[id(nxt)] + ".weight"] = [(1, idx)]
        return rebuild(model, model.arch_with_widths(widths), slices)

    def weights(self, model, unit):
        conv = {site: conv for site, conv, _, _ in model.width_sites()}[unit.site]
        return [conv.weight[unit.index]]


def _by_site(units: Sequence[Unit]) -> dict[str, set[int]]:
    out = defaultdict(set)
    for u in units:
        out[u.site].add(u.index)
    return out


def _params(prefix: str, module) -> list[str]:
    """The state-dict keys of a conv or batch norm whose first dimension is its channels."""
    return [f"{prefix}.{name}" for name, t in module.state_dict().items() if t.dim() >= 1]


@hookimpl
def register_structures():
    return [ResidualBlocks(), ConvFilters()]
