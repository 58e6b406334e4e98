"""Structures: what can be listed, ablated and physically removed. How important a unit
is belongs to the criteria, not here.

Residual networks (types ``layer`` and ``filter``): whole residual blocks, on any network
that follows :class:`harness.api.ResidualBlockNetwork`, and the output channels of
convolutions, on any network that follows :class:`harness.api.ChannelWidthNetwork` (CIFAR
and torchvision ResNets follow both; a plain CNN may follow the second alone); see
``CifarResNet`` in plugins/models/cifar_resnet.py.

Transformers (types ``layer``, ``head`` and ``neuron``): whole encoder blocks, attention
heads and the hidden units of the MLPs, on any network that follows the transformer
protocol (timm ViTs, the tabular transformer):

- ``arch``: its JSON-able architecture spec;
- ``blocks()``: ``[(site, block)]`` in forward order, each block a pre-norm timm ``Block``
  (``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``) with a plain timm ``Attention``
  (fused ``qkv`` Linear, ``proj``) and ``Mlp`` (``fc1``, activation, ``fc2``); ``site`` is
  the block's module path, so ``<site>.attn`` and ``<site>.mlp`` are those of its parts;
- ``arch_without_blocks(sites) -> (arch, rename)``: the spec without those blocks, and the
  ``rename`` map of :func:`harness.surgery.rebuild` (new module prefix -> old one);
- ``arch_with_heads({block site: heads})`` and ``arch_with_mlp({block site: hidden})``: the
  spec with those blocks narrowed (a head keeps its dimension);
- ``forward(x)``: logits; ``forward_features(x)``: the ``(N, D)`` penultimate representation
  (the class token, or the pooled tokens, after the final norm);
- optionally ``forward_to(site, x)`` (the input of the block holding ``site``, a block or a
  module inside one) and ``forward_from(site, h)`` (logits from there): the KL criterion
  then runs the blocks before a unit only once.

Unit sites: a block is ``<site>``, head ``h`` is ``<site>.attn:h``, hidden unit ``j`` is
``<site>.mlp:j``.
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from harness import hookimpl
from harness.api import ChannelWidthNetwork, ResidualBlockNetwork, Structure, Unit
from harness.surgery import (PerModel, channel_sites, evaluating, keep_indices, prune_channel_groups, rebuild,
                             replace_blocks, unit_prices, zero_)

TRANSFORMER_PROTOCOL = ("blocks", "arch_without_blocks", "arch_with_heads", "arch_with_mlp", "forward_features")


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
        return isinstance(model, ResidualBlockNetwork)

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

    def normalization(self, model, unit):
        bn = model.residual_bn(unit.site)
        return [bn.weight, bn.bias]


class ConvFilters(Structure):
    """Output channels of a block's inner convolutions, with their batch-norm channels and
    the matching input channels of the convolution that consumes them."""

    name = "resnet-filter"
    type = "filter"

    def supports(self, model):
        return isinstance(model, ChannelWidthNetwork)

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
            # a bottleneck's middle convolution loses output channels (its own site) and input
            # channels (the site before it): the slices of one tensor add up
            for key in _params(names[id(conv)], conv) + _params(names[id(bn)], bn):
                slices.setdefault(key, []).append((0, idx))
            slices.setdefault(names[id(nxt)] + ".weight", []).append((1, idx))
        return rebuild(model, model.arch_with_widths(widths), slices)

    def weights(self, model, unit):
        conv = {site: conv for site, conv, _, _ in model.width_sites()}[unit.site]
        return [conv.weight[unit.index]]

    def normalization(self, model, unit):
        bn = {site: bn for site, _, bn, _ in model.width_sites()}[unit.site]
        return [bn.weight[unit.index], bn.bias[unit.index]]


def _by_site(units: Sequence[Unit]) -> dict[str, set[int]]:
    out = defaultdict(set)
    for u in units:
        out[u.site].add(u.index)
    return out


def _params(prefix: str, module) -> list[str]:
    """The state-dict keys of a layer (convolution, batch norm, linear) whose first dimension
    is its output channels or units."""
    return [f"{prefix}.{name}" for name, t in module.state_dict().items() if t.dim() >= 1]


# ---------------------------------------------------------------- transformers
def transformer_block_problem(block) -> str | None:
    """Why the transformer structures cannot prune this block exactly, or None. They
    handle timm's pre-norm ``Block`` with a plain ``Attention`` and ``Mlp``; variants
    whose extra weights span the heads or hidden units (qk norm, attention-output norm,
    gates, an MLP norm) are refused rather than pruned wrongly."""
    from timm.layers import Attention, Mlp
    from timm.models.vision_transformer import Block

    if type(block) is not Block:
        return f"is a {type(block).__name__}, not timm's pre-norm Block"
    attn, mlp = block.attn, block.mlp
    if type(attn) is not Attention:
        return f"has a {type(attn).__name__}, not timm's Attention"
    if not isinstance(attn.q_norm, nn.Identity) or not isinstance(attn.k_norm, nn.Identity):
        return "normalises queries and keys (qk_norm)"
    if not isinstance(attn.norm, nn.Identity):
        return "normalises the attention output (scale_norm)"
    if getattr(attn, "gate", None) is not None:
        return "gates the attention output"
    if type(mlp) is not Mlp or not isinstance(mlp.fc1, nn.Linear) or not isinstance(mlp.norm, nn.Identity):
        return "has an MLP other than timm's Linear-activation-Linear Mlp"
    if any(True for _ in mlp.act.parameters()):
        return f"has an MLP activation with weights ({type(mlp.act).__name__})"
    with torch.no_grad():
        if float(mlp.act(torch.zeros(1)).abs()) != 0.0:
            return f"has an MLP activation {type(mlp.act).__name__} that is not 0 at 0"
    return None


def _is_transformer(model) -> bool:
    if not (hasattr(model, "arch") and all(hasattr(model, name) for name in TRANSFORMER_PROTOCOL)):
        return False
    blocks = model.blocks()
    return bool(blocks) and all(transformer_block_problem(block) is None for _, block in blocks)


def _part_of(model, site: str, part: str):
    """(block site, the block's ``attn`` or ``mlp``) of a head or neuron site."""
    block_site = site.removesuffix("." + part)
    return block_site, getattr(dict(model.blocks())[block_site], part)


def _weight_and_bias(linear) -> list:
    return [t for t in (linear.weight, linear.bias) if t is not None]


class TransformerBlocks(Structure):
    """Whole encoder blocks. A pre-norm block adds its attention and MLP outputs to the
    residual stream, so zeroing the attention's output projection and the MLP's second
    linear (weights and biases) makes it the identity: an exact ablation. At least one
    block always stays."""

    name = "transformer-block"
    type = "layer"

    def supports(self, model):
        return _is_transformer(model)

    def units(self, model):
        blocks = model.blocks()
        return [Unit(self.name, site) for site, _ in blocks] if len(blocks) > 1 else []

    def ablate(self, model, units: Sequence[Unit]):
        blocks = dict(model.blocks())
        restores = []
        for u in units:
            block = blocks[u.site]
            restores += [zero_(t) for t in _weight_and_bias(block.attn.proj) + _weight_and_bias(block.mlp.fc2)]
        return _restoring(restores)

    def remove(self, model, units: Sequence[Unit]):
        sites = [site for site, _ in model.blocks()]
        drop = {u.site for u in units}
        if drop - set(sites):
            raise ValueError(f"block(s) {', '.join(sorted(drop - set(sites)))} are not blocks of this model")
        if drop >= set(sites):
            raise ValueError("cannot remove every block of a transformer")
        arch, rename = model.arch_without_blocks(drop)
        return rebuild(model, arch, rename=rename)

    def weights(self, model, unit):
        block = dict(model.blocks())[unit.site]
        return [block.attn.qkv.weight, block.attn.proj.weight, block.mlp.fc1.weight, block.mlp.fc2.weight]


def _head_rows(attn, heads) -> list[int]:
    """Rows of the fused qkv projection that belong to these heads: its output is
    (q | k | v), each ``num_heads`` consecutive slices of ``head_dim``."""
    d, width = attn.head_dim, attn.num_heads * attn.head_dim
    return [part * width + h * d + i for part in range(3) for h in sorted(heads) for i in range(d)]


def _head_columns(attn, heads) -> list[int]:
    """Columns of the output projection that read these heads."""
    d = attn.head_dim
    return [h * d + i for h in sorted(heads) for i in range(d)]


class AttentionHeads(Structure):
    """Attention heads: a head's query, key and value rows of the fused qkv projection and
    its columns of the output projection. Zeroing those columns removes exactly what the
    head adds to the residual stream."""

    name = "attention-head"
    type = "head"

    def supports(self, model):
        return _is_transformer(model)

    def units(self, model):
        return [Unit(self.name, f"{site}.attn", h) for site, block in model.blocks()
                if block.attn.num_heads > 1 for h in range(block.attn.num_heads)]

    def ablate(self, model, units: Sequence[Unit]):
        restores = []
        for site, heads in _by_site(units).items():
            _, attn = _part_of(model, site, "attn")
            restores.append(zero_(attn.proj.weight, _head_columns(attn, heads), dim=1))
        return _restoring(restores)

    def remove(self, model, units: Sequence[Unit]):
        names = {id(m): n for n, m in model.named_modules()}
        slices, heads = {}, {}
        for site, drop in _by_site(units).items():
            block_site, attn = _part_of(model, site, "attn")
            kept = keep_indices(attn.num_heads, drop).tolist()
            heads[block_site] = len(kept)
            rows = torch.tensor(_head_rows(attn, kept), dtype=torch.long)
            for key in _params(names[id(attn.qkv)], attn.qkv):
                slices[key] = [(0, rows)]
            slices[names[id(attn.proj)] + ".weight"] = [(1, torch.tensor(_head_columns(attn, kept), dtype=torch.long))]
        return rebuild(model, model.arch_with_heads(heads), slices)

    def weights(self, model, unit):
        _, attn = _part_of(model, unit.site, "attn")
        d, width, h = attn.head_dim, attn.num_heads * attn.head_dim, unit.index
        rows = [attn.qkv.weight[part * width + h * d: part * width + (h + 1) * d] for part in range(3)]
        return [*rows, attn.proj.weight[:, h * d:(h + 1) * d]]


class MlpNeurons(Structure):
    """Hidden units of a block's MLP: a row of the first linear (weight and bias) and the
    matching column of the second. Zeroing the row and its bias gives activation(0) = 0
    (GELU, ReLU, SiLU), so the unit feeds nothing on."""

    name = "mlp-neuron"
    type = "neuron"

    def supports(self, model):
        return _is_transformer(model)

    def units(self, model):
        return [Unit(self.name, f"{site}.mlp", j) for site, block in model.blocks()
                if block.mlp.fc1.out_features > 1 for j in range(block.mlp.fc1.out_features)]

    def ablate(self, model, units: Sequence[Unit]):
        restores = []
        for site, idx in _by_site(units).items():
            _, mlp = _part_of(model, site, "mlp")
            restores += [zero_(t, sorted(idx)) for t in _weight_and_bias(mlp.fc1)]
        return _restoring(restores)

    def remove(self, model, units: Sequence[Unit]):
        names = {id(m): n for n, m in model.named_modules()}
        slices, hidden = {}, {}
        for site, drop in _by_site(units).items():
            block_site, mlp = _part_of(model, site, "mlp")
            idx = keep_indices(mlp.fc1.out_features, drop)
            hidden[block_site] = len(idx)
            for key in _params(names[id(mlp.fc1)], mlp.fc1):
                slices[key] = [(0, idx)]
            slices[names[id(mlp.fc2)] + ".weight"] = [(1, idx)]
        return rebuild(model, model.arch_with_mlp(hidden), slices)

    def weights(self, model, unit):
        _, mlp = _part_of(model, unit.site, "mlp")
        return [mlp.fc1.weight[unit.index], mlp.fc2.weight[:, unit.index]]


# ---------------------------------------------------------------- any traced network
def _is_traced(model) -> bool:
    arch = getattr(model, "arch", None)
    return hasattr(model, "traced_input_shape") and isinstance(arch, dict) and isinstance(arch.get("removed"), list)


def _logged(model, new, operation: dict):
    """``new`` with its spec: ``model``'s plus this surgery operation (what a reload replays)."""
    arch = copy.deepcopy(model.arch)
    arch["removed"].append(operation)
    new.arch = arch
    return new


#: how many of a block's last layers the probe zeroes at most: MobileNetV2, ConvNeXt and ResNet
#: blocks end in one layer, GhostNet's bottleneck in a ghost module of two parallel paths, which
#: the last three layers it runs (primary convolution's batch norm, cheap convolution and its
#: batch norm) silence together
BRANCH_ENDS = 4


@dataclass(frozen=True)
class Removable:
    """A module the traced blocks can remove: a residual block (``kind`` "residual", ablated by
    zeroing ``layers``, the last layers of its branch) or a plain layer ("plain": a convolution
    that keeps its input's shape, ``layers`` = it and its batch norm, ablated by making them the
    identity). Removal replaces ``replaced`` by the identity: the block itself, or the plain
    layer's convolution, batch norm and the ReLU after them."""

    kind: str
    layers: tuple[str, ...]
    replaced: tuple[str, ...]


_PROBED = PerModel(keep=8)  # model -> (its residual blocks, its plain layers), each {site: Removable}


def probe_removable(model: nn.Module, input_shape, plain: bool = False) -> dict[str, Removable]:
    """Every module the traced blocks can remove, found by trying on a probe input (random
    images through the whole network, in eval mode), once per model object:

    - residual blocks with an identity shortcut: a module whose output has its input's shape,
      and which returns its input exactly once the weights of the last layer it runs (in
      forward order) are zeroed, or of its last two, ... up to ``BRANCH_ENDS``, is ``input +
      branch``. Removing it leaves the identity; zeroing those layers ablates it. A module that
      holds a block is not one (the innermost is kept);
    - with ``plain``, plain layers outside those blocks: a convolution (one group, as many
      outputs as inputs) between two ReLUs whose output has its input's shape (VGG's), with the
      batch norm between it and the second ReLU. A Dirac kernel and the batch norm undone make
      them the identity, and the second ReLU then passes its input (the first one's output)
      unchanged: removing all three leaves the same network (checked on the probe), and no
      in-place ReLU overwrites what the first one's backward pass needs."""
    found = _PROBED.get(model, lambda: _probe(model, input_shape))
    if plain and found[1] is None:
        found[1] = _probe_plain(model, input_shape, found[0])
    return found[0] | (found[1] if plain else {})


def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


@torch.no_grad()
def _run_recording(model: nn.Module, input_shape):
    """The probe input's pass: (every module's first input and output, the layers with weights
    of their own in the order they ran, the probe, the network's output)."""
    modules = dict(model.named_modules())
    calls, order = {}, []

    def record(name):
        def hook(module, args, output):
            if name not in calls and args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
                calls[name] = (args[0], output)
            order.append(name)
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in modules.items() if name]
    device = next(model.parameters()).device
    probe = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with evaluating(model):
            expected = model(probe)
    finally:
        for h in hooks:
            h.remove()
    layers = [n for n in dict.fromkeys(order) if not any(True for _ in modules[n].children())
              and _has_weights(modules[n])]
    return calls, layers, probe, expected


@torch.no_grad()
def _probe(model: nn.Module, input_shape) -> list:
    modules = dict(model.named_modules())
    calls, layers, _, _ = _run_recording(model, input_shape)
    found: dict[str, Removable] = {}
    with evaluating(model):
        for name in sorted(calls, key=lambda n: -n.count(".")):  # innermost first
            x, y = calls[name]
            block = modules[name]
            if (x.shape != y.shape or not any(True for _ in block.children()) or float(x.abs().max()) == 0.0
                    or any(site.startswith(name + ".") for site in found)):
                continue
            inside = [n for n in layers if n.startswith(name + ".")]
            for k in range(1, min(len(inside), BRANCH_ENDS) + 1):
                with _restoring([zero_(p) for n in inside[-k:] for p in modules[n].parameters(recurse=False)]):
                    out = block(x)
                if torch.allclose(out, x, rtol=0, atol=1e-5 * float(x.abs().max())):
                    found[name] = Removable("residual", tuple(inside[-k:]), (name,))
                    break
    return [dict(sorted(found.items(), key=lambda item: layers.index(item[1].layers[-1]))), None]


@torch.no_grad()
def _probe_plain(model: nn.Module, input_shape, blocks: dict[str, Removable]) -> dict[str, Removable]:
    modules = dict(model.named_modules())
    calls, layers, probe, expected = _run_recording(model, input_shape)
    found = {}
    with evaluating(model):
        for name in layers:
            conv = modules[name]
            if (not isinstance(conv, nn.Conv2d) or conv.groups != 1 or conv.in_channels != conv.out_channels
                    or name not in calls or calls[name][0].shape != calls[name][1].shape
                    or any(name.startswith(site + ".") for site in blocks)):
                continue
            x, y = calls[name]
            after_relu = any(out is x and isinstance(modules[n], nn.ReLU) for n, (_, out) in calls.items())
            norm = next((n for n, (i, _) in calls.items() if i is y and isinstance(modules[n], _BatchNorm)), None)
            last = calls[norm][1] if norm else y
            relu = next((n for n, (i, _) in calls.items() if i is last and isinstance(modules[n], nn.ReLU)), None)
            if not after_relu or relu is None:
                continue
            layers = (name,) + ((norm,) if norm else ())
            plain = Removable("plain", layers, layers + (relu,))
            bypass = [modules[n].register_forward_hook(lambda m, args, out: args[0]) for n in plain.replaced]
            try:
                without = model(probe)
            finally:
                for h in bypass:
                    h.remove()
            with _restoring(_make_identity(model, plain)):
                ablated = model(probe)
            if torch.allclose(ablated, without, rtol=0, atol=1e-4 * (float(expected.abs().max()) or 1.0)):
                found[name] = plain
    return found


def _make_identity(model, plain: Removable) -> list:
    """A plain layer made the identity in place (a Dirac kernel, no bias; its batch norm
    undone on its running statistics); returns the functions that restore it."""
    conv = model.get_submodule(plain.layers[0])
    restores = [zero_(conv.weight)] + ([zero_(conv.bias)] if conv.bias is not None else [])
    nn.init.dirac_(conv.weight.data)
    if len(plain.layers) > 1:
        norm = model.get_submodule(plain.layers[1])
        restores += [zero_(norm.weight), zero_(norm.bias)]
        norm.weight.data.copy_(torch.sqrt(norm.running_var + norm.eps))
        norm.bias.data.copy_(norm.running_mean)
    return restores


class TracedBlocks(Structure):
    """Residual blocks of any traced network (MobileNetV2's inverted residuals, ConvNeXt
    blocks, torchvision's ResNet and RegNet blocks, GhostNet's bottlenecks), found by
    :func:`probe_removable`. Removing one replaces it by the identity; zeroing the last layers
    of its branch ablates it exactly. Blocks that change the shape or have a projection
    shortcut are never offered. With ``--plain-layers`` also plain convolutions between two
    ReLUs whose removal keeps the shapes (VGG's 512->512 layers): their ablation makes them the
    identity (a Dirac kernel, the batch norm undone), not zero."""

    name = "traced-block"
    type = "layer"
    description = "residual blocks of traced networks, and with --plain-layers their shape-keeping convolutions " \
                  "(ablation = identity, not zero)"

    def __init__(self):
        self.plain_layers = False

    def configure(self, options):
        self.plain_layers = bool(options.get("plain_layers", False))

    def supports(self, model):
        return _is_traced(model)

    def _removable(self, model) -> dict[str, Removable]:
        return probe_removable(model, model.traced_input_shape(), self.plain_layers)

    def units(self, model):
        return [Unit(self.name, site) for site in self._removable(model)]

    def ablate(self, model, units: Sequence[Unit]):
        found = self._removable(model)
        restores = []
        for u in units:
            if found[u.site].kind == "plain":
                restores += _make_identity(model, found[u.site])
            else:
                restores += [zero_(p) for layer in found[u.site].layers
                             for p in model.get_submodule(layer).parameters(recurse=False)]
        return _restoring(restores)

    def remove(self, model, units: Sequence[Unit]):
        found = self._removable(model)
        sites = sorted({u.site for u in units})
        bad = set(sites) - set(found)
        if bad:
            raise ValueError(f"module(s) {', '.join(sorted(bad))} are not removable residual blocks or plain layers")
        replaced = sorted(name for site in sites for name in found[site].replaced)
        return _logged(model, replace_blocks(model, replaced), {"blocks": replaced})

    def weights(self, model, unit):
        return [m.weight for m in model.get_submodule(unit.site).modules()
                if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2]

    def normalization(self, model, unit):
        found = self._removable(model)[unit.site]
        return [p for name in found.layers for p in model.get_submodule(name).parameters(recurse=False)
                if isinstance(model.get_submodule(name), NORMALIZATIONS)]


NORMALIZATIONS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_BatchNorm = nn.modules.batchnorm._BatchNorm


class TracedChannels(Structure):
    """Groups of coupled channels of any network Torch-Pruning can trace: a filter with its
    batch-norm channel, the depthwise convolution and residual sums it feeds, and the input
    channels of the layers that read it (:func:`harness.surgery.channel_sites`). A unit is
    one channel of a group, named by the layer Torch-Pruning roots the group at; where grouped
    convolutions read or write the group, one channel in each of their groups (Torch-Pruning's
    pruner takes them so), so every candidate runs. Ablation zeroes every tensor slice of the
    unit (exact where a normalisation over channels, ConvNeXt's LayerNorm, does not read it);
    removal cuts them from a copy; prices come from the layers' shapes, not from trial cuts."""

    name = "traced-channel"
    type = "filter"

    def supports(self, model):
        # tracing once here makes a network Torch-Pruning cannot trace a one-line error before
        # anything trains (the graph is kept for the units)
        return _is_traced(model) and self._sites(model) is not None

    def _sites(self, model):
        return channel_sites(model, model.traced_input_shape(), model.traced_ignored())

    def units(self, model):
        return [Unit(self.name, site, j) for site, group in self._sites(model).items() if group.units > 1
                for j in range(group.units)]

    def _slices(self, model, site, units):
        """``[(layer, tensor, dim, indices)]`` of those units of a site: outputs of layers and
        normalisations (weights and biases), inputs of the layers that read them (a grouped
        convolution's inputs go with their producer's outputs); ``layer`` is None for a
        parameter outside any layer (ConvNeXt's layer scale)."""
        group = self._sites(model)[site]
        channels = group.channels_of(units)
        out = []
        for piece in group.pieces:
            idx = piece.indices(channels)
            if piece.kind == "grouped-in" or not idx:
                continue
            out.append((piece.layer, piece.tensor, piece.dim, idx))
            bias = getattr(piece.layer, "bias", None) if piece.kind == "out" else None
            if isinstance(bias, torch.Tensor):
                out.append((piece.layer, bias, 0, idx))
        return out

    def ablate(self, model, units: Sequence[Unit]):
        return _restoring([zero_(tensor, idx, dim) for site, drop in _by_site(units).items()
                           for _, tensor, dim, idx in self._slices(model, site, sorted(drop))])

    def remove(self, model, units: Sequence[Unit]):
        sites = self._sites(model)
        drop = {site: sites[site].channels_of(sorted(idx)) for site, idx in sorted(_by_site(units).items())}
        return _logged(model, prune_channel_groups(model, model.traced_input_shape(), drop), {"channels": drop})

    def prices(self, model, measure):
        return unit_prices(model, model.traced_input_shape(), self._sites(model), measure)

    def weights(self, model, unit):
        # the convolution and linear slices only: batch-norm scales (about 1) and layer scales
        # (1e-6) in the mix would rank groups by how many normalisations they hold
        return [t.index_select(dim, torch.tensor(idx, device=t.device))
                for layer, t, dim, idx in self._slices(model, unit.site, [unit.index])
                if t.dim() >= 2 and not isinstance(layer, NORMALIZATIONS)]

    def normalization(self, model, unit):
        return [t.index_select(dim, torch.tensor(idx, device=t.device))
                for layer, t, dim, idx in self._slices(model, unit.site, [unit.index]) if isinstance(layer, NORMALIZATIONS)]


@hookimpl
def register_structures():
    return [ResidualBlocks, ConvFilters, TransformerBlocks, AttentionHeads, MlpNeurons, TracedBlocks, TracedChannels]
