"""A plain CNN (no residual blocks) and its own layer structure, written against the public
plugin interfaces only.

``example-vgg`` stacks 3x3 convolution, batch norm, ReLU layers, with a 2x2 max-pool after
each stage. It offers the width protocol (:class:`harness.api.ChannelWidthNetwork`), so the
built-in ``resnet-filter`` structure prunes its filters; it has no residual block, so its
layers are the business of ``vgg-layer``: a layer whose input and output widths match and
that keeps the spatial size can go, the network then runs as if that layer were the
identity. The family names both structures (``structure_names``), so no other package's
layer structure can displace its own.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import ModelFamily, Structure, Unit
from harness.surgery import rebuild

STAGES = [[16, 16], [32, 32, 32], [64, 64, 64]]  # output widths per layer; a max-pool after each stage


class VGG(nn.Module):
    def __init__(self, arch: dict):
        super().__init__()
        self.arch = arch
        in_ch, self.sites = arch["in_channels"], []
        for s, stage in enumerate(arch["stages"]):
            for i, width in enumerate(stage):
                site = f"s{s}_{i}"
                self.add_module(site, nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1, bias=False),
                                                    nn.BatchNorm2d(width)))
                self.sites.append((s, i, site))
                in_ch = width
        self.linear = nn.Linear(in_ch, arch["num_classes"])

    def layers(self) -> list[tuple[str, nn.Sequential]]:
        return [(site, getattr(self, site)) for _, _, site in self.sites]

    def forward_features(self, x):
        for s, stage in enumerate(self.arch["stages"]):
            for i in range(len(stage)):
                x = F.relu(getattr(self, f"s{s}_{i}")(x))
            x = F.max_pool2d(x, 2) if x.shape[-1] >= 2 else x
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x):
        return self.linear(self.forward_features(x))

    # -- harness.api.ChannelWidthNetwork: the built-in resnet-filter structure prunes these
    def width_sites(self):
        layers = self.layers()
        out = []
        for k, (site, layer) in enumerate(layers):
            consumer = layers[k + 1][1][0] if k + 1 < len(layers) else self.linear
            if consumer is not self.linear:  # the last layer's width is the classifier's input: kept
                out.append((f"{site}.0", layer[0], layer[1], consumer))
        return out

    def arch_with_widths(self, widths):
        arch = copy.deepcopy(self.arch)
        for site, width in widths.items():
            s, i = site.split(".")[0][1:].split("_")
            arch["stages"][int(s)][int(i)] = width
        return arch


class VGGFamily(ModelFamily):
    name = "example-vgg"
    description = "a plain 8-layer CNN for 32x32 images (example plugin: width protocol plus its own layer structure)"
    default_dataset = "cifar10"
    default_structures = ("layer", "filter")
    structure_names = {"layer": "vgg-layer", "filter": "resnet-filter"}

    def default_arch(self, name, num_classes, input_shape):
        return {"model": name, "in_channels": input_shape[0], "num_classes": num_classes,
                "stages": copy.deepcopy(STAGES)}

    def build(self, arch):
        return VGG(arch)


class VGGLayers(Structure):
    """A layer of a plain CNN whose input and output widths match: ablating it makes it the
    identity (a Dirac kernel, the batch norm undone; the ReLU after it passes its non-negative
    input unchanged), which is what removing it does, since a layer without a shortcut cannot
    simply be zeroed."""

    name = "vgg-layer"
    type = "layer"
    description = "removable layers of example-vgg (ablation = identity, not zero)"

    def supports(self, model):
        return isinstance(model, VGG)

    def units(self, model):
        out = []
        for s, stage in enumerate(model.arch["stages"]):
            for i in range(1, len(stage)):  # the first layer of a stage takes the previous stage's width
                layer = getattr(model, f"s{s}_{i}")
                if layer[0].in_channels == layer[0].out_channels:
                    out.append(Unit(self.name, f"s{s}_{i}"))
        return out

    def ablate(self, model, units):
        saved = []
        with torch.no_grad():
            for u in units:
                conv, bn = getattr(model, u.site)
                saved.append([t.detach().clone() for t in (conv.weight, bn.weight, bn.bias)])
                nn.init.dirac_(conv.weight)
                bn.weight.copy_(torch.sqrt(bn.running_var + bn.eps))  # bn(x) = x
                bn.bias.copy_(bn.running_mean)

        @contextlib.contextmanager
        def restoring():
            try:
                yield
            finally:
                with torch.no_grad():
                    for u, (w, g, b) in zip(units, saved):
                        conv, bn = getattr(model, u.site)
                        conv.weight.copy_(w), bn.weight.copy_(g), bn.bias.copy_(b)

        return restoring()

    def remove(self, model, units):
        drop = {u.site for u in units}
        arch, rename = copy.deepcopy(model.arch), {}
        for s, stage in enumerate(model.arch["stages"]):
            kept = [i for i in range(len(stage)) if f"s{s}_{i}" not in drop]
            arch["stages"][s] = [stage[i] for i in kept]
            rename |= {f"s{s}_{new}.": f"s{s}_{old}." for new, old in enumerate(kept)}
        return rebuild(model, arch, rename=rename)

    def weights(self, model, unit):
        return [getattr(model, unit.site)[0].weight]

    def normalization(self, model, unit):
        bn = getattr(model, unit.site)[1]
        return [bn.weight, bn.bias]



