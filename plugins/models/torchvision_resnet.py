"""torchvision's ResNets (``torchvision:resnet18`` ... ``torchvision:resnet152``, and the
wide ResNets) in a form the ``resnet-block`` and ``resnet-filter`` structures prune: the
network is torchvision's own ``ResNet`` with its ``BasicBlock``/``Bottleneck`` blocks,
rebuilt from a JSON-able architecture spec after blocks or filters are removed.

Spec: ``{"model": "torchvision:resnet50", "family": "torchvision_resnet", "block":
"bottleneck", "in_channels": 3, "num_classes": 10, "stem": "cifar", "stages": [{"planes":
64, "blocks": [{"widths": [64, 64], "stride": 1}, ...]}, ...]}``. ``planes`` is
torchvision's name for a stage's width (its blocks output ``planes * expansion``
channels); a block's ``widths`` are the output channels of its inner convolutions (conv1,
and conv2 in a bottleneck), which filter pruning shrinks.

Stem (``--torchvision-stem``): ``imagenet`` is torchvision's 7x7 stride-2 convolution and
3x3 max-pool (a quarter of the input's size); ``cifar`` is a 3x3 stride-1 convolution and
no max-pool, the usual adaptation to 32x32 images; ``auto`` (the default) takes ``cifar``
for inputs smaller than 64 px and ``imagenet`` otherwise.

Weights: ``--pretrained`` takes torchvision's default ImageNet weights for the name
(``torchvision.models.get_model_weights(name).DEFAULT``) through torch.hub's cache, so a
file already in ``$TORCH_HOME/hub/checkpoints/`` is used offline. The tensors whose shapes
differ from the model's (the classifier when there are not 1000 classes, the stem
convolution under the cifar stem or with other than 3 input channels) keep their fresh
initialisation, and a message names them. ``--checkpoint`` takes a plain torchvision
state dict (the keys are torchvision's own).
"""

from __future__ import annotations

import copy

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet, conv1x1

from harness.api import ModelFamily, Option
from harness.errors import HarnessError, warn
from harness.api import load_url_state_dict
from harness_plugins.models.blocks import block_index, fit_shapes, staged_arch_without_blocks

PREFIX = "torchvision:"
VARIANTS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2")
BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
STEMS = ("auto", "imagenet", "cifar")
STEM_WIDTH = 64  # every torchvision ResNet's stem
CIFAR_STEM_BELOW = 64  # px: smaller inputs get the cifar stem under --torchvision-stem auto


def inner_convs(block: nn.Module) -> list[nn.Conv2d]:
    """The convolutions of a block's residual branch, in order (2 or 3)."""
    return [getattr(block, f"conv{i}") for i in (1, 2, 3) if hasattr(block, f"conv{i}")]


def make_block(kind: type, in_planes: int, planes: int, widths: list[int], stride: int) -> nn.Module:
    """torchvision's block of that kind, its inner convolutions resized to ``widths``."""
    out = planes * kind.expansion
    downsample = None
    if stride != 1 or in_planes != out:  # torchvision's rule for a projection shortcut
        downsample = nn.Sequential(conv1x1(in_planes, out, stride), nn.BatchNorm2d(out))
    block = kind(in_planes, planes, stride, downsample)
    channels = [in_planes, *widths, out]
    for i, conv in enumerate(inner_convs(block)):
        if (conv.in_channels, conv.out_channels) != (channels[i], channels[i + 1]):
            setattr(block, f"conv{i + 1}", nn.Conv2d(channels[i], channels[i + 1], conv.kernel_size, conv.stride,
                                                     conv.padding, bias=False))
            setattr(block, f"bn{i + 1}", nn.BatchNorm2d(channels[i + 1]))
    return block


class TorchvisionResNet(ResNet):
    """torchvision's ResNet built from an architecture spec, with the residual-network
    protocol of the resnet-block and resnet-filter structures."""

    def __init__(self, arch: dict):
        kind = BLOCKS[arch["block"]]
        # the stages are replaced below: build torchvision's skeleton with one block each
        super().__init__(kind, [1] * len(arch["stages"]), num_classes=arch["num_classes"])
        self.arch = copy.deepcopy(arch)
        if arch["stem"] == "cifar":
            self.conv1 = nn.Conv2d(arch["in_channels"], STEM_WIDTH, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        elif arch["in_channels"] != self.conv1.in_channels:
            self.conv1 = nn.Conv2d(arch["in_channels"], STEM_WIDTH, 7, 2, 3, bias=False)
        in_planes = STEM_WIDTH
        for s, stage in enumerate(arch["stages"], start=1):
            blocks = []
            for spec in stage["blocks"]:
                blocks.append(make_block(kind, in_planes, stage["planes"], spec["widths"], spec["stride"]))
                in_planes = stage["planes"] * kind.expansion
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.num_stages = len(arch["stages"])
        # the initialisation torchvision gives its convolutions (batch norms start at 1 and 0 anyway)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(site, block) for every residual block, in forward order."""
        return [(f"layer{s}.{i}", block) for s in range(1, self.num_stages + 1)
                for i, block in enumerate(getattr(self, f"layer{s}"))]

    # -- the residual-network protocol of the resnet-block and resnet-filter structures
    def removable_blocks(self) -> list[str]:
        """Blocks with an identity shortcut: removing one leaves the identity."""
        return [site for site, block in self.blocks() if block.downsample is None]

    def residual_bn(self, site: str) -> nn.BatchNorm2d:
        """The last batch norm of the block's residual branch: zeroing it ablates the block."""
        block = dict(self.blocks())[site]
        return getattr(block, f"bn{len(inner_convs(block))}")

    def width_sites(self) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d, nn.Conv2d]]:
        """(site, conv, its batch norm, the conv that consumes it) for every inner
        convolution but a block's last (whose output joins the shortcut)."""
        sites = []
        for site, block in self.blocks():
            convs = inner_convs(block)
            sites += [(f"{site}.conv{i}", convs[i - 1], getattr(block, f"bn{i}"), convs[i])
                      for i in range(1, len(convs))]
        return sites

    def arch_without_blocks(self, sites) -> tuple[dict, dict[str, str]]:
        return staged_arch_without_blocks(self.arch, sites)

    def arch_with_widths(self, widths: dict[str, int]) -> dict:
        arch = copy.deepcopy(self.arch)
        for site, width in widths.items():
            stage, index, conv = site.split(".")
            block = arch["stages"][int(stage.removeprefix("layer")) - 1]["blocks"][int(index)]
            block["widths"][int(conv.removeprefix("conv")) - 1] = width
        return arch

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation (after global average pooling)."""
        out = self._stem(x)
        for _, block in self.blocks():
            out = block(out)
        return torch.flatten(self.avgpool(out), 1)

    def forward_to(self, site: str, x: torch.Tensor) -> torch.Tensor:
        """The input of the block that holds ``site``: lets a criterion that ablates units
        there re-run only the network from that block on."""
        out = self._stem(x)
        for _, block in self.blocks()[: block_index(self.blocks(), site)]:
            out = block(out)
        return out

    def forward_from(self, site: str, h: torch.Tensor) -> torch.Tensor:
        """Logits, given the input ``h`` of the block that holds ``site``."""
        for _, block in self.blocks()[block_index(self.blocks(), site):]:
            h = block(h)
        return self.fc(torch.flatten(self.avgpool(h), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def stem_help() -> str:
    return (f"stem of torchvision ResNets: imagenet (7x7 stride-2 conv and max-pool), cifar (3x3 stride-1 conv, "
            f"no max-pool) or auto (cifar below {CIFAR_STEM_BELOW} px, imagenet otherwise)")


class TorchvisionResNetFamily(ModelFamily):
    name = PREFIX
    description = "torchvision's ResNets (resnet18/34/50/101/152, wide_resnet50_2/101_2), ImageNet weights with --pretrained"
    default_dataset = "cifar10"
    default_structures = ("layer", "filter")
    structure_names = {"layer": "resnet-block", "filter": "resnet-filter"}
    optimizer = "sgd"
    options = (Option("torchvision_stem", "auto", stem_help(),
                      check=lambda v: None if v in STEMS else f"valid choices: {', '.join(STEMS)}",
                      affects_training=True),)

    def __init__(self):
        self.stem = "auto"
        # the architecture last made for each name: create_model asks for it before the
        # pretrained weights, which are then fitted to it (its classes, its stem)
        self._made: dict[str, dict] = {}

    def configure(self, options: dict) -> None:
        self.stem = options["torchvision_stem"]

    def claims(self, name):
        """torchvision's ResNets; its other networks are the traced family's."""
        return name.removeprefix(PREFIX) in VARIANTS

    def check_name(self, name):
        self.variant(name)

    @staticmethod
    def variant(name: str) -> str:
        variant = name.removeprefix(PREFIX)
        if variant not in VARIANTS:
            raise HarnessError(f"unknown torchvision model {name!r}; valid choices: "
                               f"{', '.join(PREFIX + v for v in VARIANTS)}")
        return variant

    def default_arch(self, name, num_classes, input_shape):
        if len(input_shape) != 3:
            raise HarnessError(f"{name} needs images (channels, height, width), not inputs of shape {tuple(input_shape)}")
        with torch.device("meta"):  # torchvision's own definition, read without allocating it
            reference = torchvision.models.get_model(self.variant(name))
        stem = self.stem
        if stem == "auto":
            stem = "cifar" if min(input_shape[1:]) < CIFAR_STEM_BELOW else "imagenet"
        stages = []
        for s in range(1, 5):
            layer = getattr(reference, f"layer{s}")
            convs = inner_convs(layer[0])
            stages.append({
                "planes": convs[-1].out_channels // layer[0].expansion,
                "blocks": [{"widths": [c.out_channels for c in inner_convs(b)[:-1]], "stride": b.stride}
                           for b in layer],
            })
        arch = {"model": name, "family": "torchvision_resnet",
                "block": "bottleneck" if isinstance(layer[0], Bottleneck) else "basic",
                "in_channels": input_shape[0], "num_classes": num_classes, "stem": stem, "stages": stages}
        self._made[name] = arch
        return arch

    def build(self, arch: dict) -> nn.Module:
        return TorchvisionResNet(arch)

    def pretrained_state_dict(self, name, dataset):
        weights = torchvision.models.get_model_weights(self.variant(name)).DEFAULT
        state = load_url_state_dict(weights.url)
        arch = self._made.get(name)
        if arch is None:
            return state
        fitted, kept_fresh = fit_shapes(state, self.build(arch).state_dict())
        if kept_fresh:
            warn(f"{name}: ImageNet weights {weights}, except {', '.join(kept_fresh)} (their shapes differ here: "
                 f"{arch['num_classes']} classes, {arch['stem']} stem, {arch['in_channels']} input channels), which "
                 "start from fresh initialisation")
        return fitted

    def adapt_state_dict(self, state: dict) -> dict:
        if "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        return {k.removeprefix("module."): v for k, v in state.items()}


def torchvision_resnets() -> list[type[TorchvisionResNetFamily]]:
    return [TorchvisionResNetFamily]
