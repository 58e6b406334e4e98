"""CIFAR ResNets (He et al. 2016, option-A shortcuts) whose blocks and inner widths are
described by a JSON-able architecture spec, so that a pruned network can be rebuilt.

Spec: ``{"model": name, "family": "cifar_resnet", "in_channels": 3, "num_classes": 10,
"stem": 16, "stages": [{"planes": 16, "blocks": [[mid, stride], ...]}, ...]}``; a
block's ``mid`` is the width of its inner convolution (what filter pruning shrinks).
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import ModelFamily
from harness.errors import HarnessError
from harness.api import load_url_state_dict
from harness_plugins.models.blocks import block_index, staged_arch_without_blocks

AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, mid: int, planes: int, stride: int):
        super().__init__()
        self.in_planes, self.planes, self.stride = in_planes, planes, stride
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    @property
    def identity_shortcut(self) -> bool:
        """Input and output shapes match, so the block can be removed outright."""
        return self.stride == 1 and self.in_planes == self.planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity_shortcut:
            return x
        # option A: subsample, then zero-pad the new channels (no parameters)
        pad = self.planes - self.in_planes
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, pad // 2, pad - pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, arch: dict):
        super().__init__()
        self.arch = copy.deepcopy(arch)
        stem = arch["stem"]
        self.conv1 = nn.Conv2d(arch["in_channels"], stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        in_planes = stem
        for s, stage in enumerate(arch["stages"], start=1):
            blocks = []
            for mid, stride in stage["blocks"]:
                blocks.append(BasicBlock(in_planes, mid, stage["planes"], stride))
                in_planes = stage["planes"]
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.num_stages = len(arch["stages"])
        self.linear = nn.Linear(in_planes, arch["num_classes"])
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def blocks(self) -> list[tuple[str, BasicBlock]]:
        """(site, block) for every residual block, in forward order."""
        return [
            (f"layer{s}.{i}", block)
            for s in range(1, self.num_stages + 1)
            for i, block in enumerate(getattr(self, f"layer{s}"))
        ]

    # -- the residual-network protocol of the resnet-block and resnet-filter structures
    def removable_blocks(self) -> list[str]:
        """Blocks whose input and output shapes match: removing one leaves the identity."""
        return [site for site, block in self.blocks() if block.identity_shortcut]

    def residual_bn(self, site: str) -> nn.BatchNorm2d:
        """The last batch norm of the block's residual branch: zeroing it ablates the block."""
        return dict(self.blocks())[site].bn2

    def width_sites(self) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d, nn.Conv2d]]:
        """(site, conv, its batch norm, the conv that consumes it) for every inner
        convolution whose output channels can be removed."""
        return [(f"{site}.conv1", b.conv1, b.bn1, b.conv2) for site, b in self.blocks()]

    def arch_without_blocks(self, sites) -> tuple[dict, dict[str, str]]:
        return staged_arch_without_blocks(self.arch, sites)

    def arch_with_widths(self, widths: dict[str, int]) -> dict:
        arch = copy.deepcopy(self.arch)
        for site, width in widths.items():
            stage, index, _ = site.split(".")
            arch["stages"][int(stage.removeprefix("layer")) - 1]["blocks"][int(index)][0] = width
        return arch

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation (after global average pooling)."""
        out = F.relu(self.bn1(self.conv1(x)))
        for _, block in self.blocks():
            out = block(out)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward_to(self, site: str, x: torch.Tensor) -> torch.Tensor:
        """The input of the block that holds ``site``: lets a criterion that ablates units
        there re-run only the network from that block on."""
        out = F.relu(self.bn1(self.conv1(x)))
        for _, block in self.blocks()[: block_index(self.blocks(), site)]:
            out = block(out)
        return out

    def forward_from(self, site: str, h: torch.Tensor) -> torch.Tensor:
        """Logits, given the input ``h`` of the block that holds ``site``."""
        for _, block in self.blocks()[block_index(self.blocks(), site):]:
            h = block(h)
        return self.linear(F.adaptive_avg_pool2d(h, 1).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.forward_features(x))


def cifar_resnet_arch(name: str, depth: int, width: int, num_classes: int, in_channels: int) -> dict:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return {
        "model": name,
        "family": "cifar_resnet",
        "in_channels": in_channels,
        "num_classes": num_classes,
        "stem": width,
        "stages": [
            {"planes": width * 2**s, "blocks": [[width * 2**s, 2 if (s > 0 and i == 0) else 1] for i in range(n)]}
            for s in range(3)
        ],
    }


class CifarResNetFamily(ModelFamily):
    structure_names = {"layer": "resnet-block", "filter": "resnet-filter"}

    def __init__(self, name: str, depth: int, width: int = 16, default_dataset: str = "cifar10",
                 pretrained_file: str | None = None, description: str = ""):
        self.name, self.depth, self.width = name, depth, width
        self.default_dataset = default_dataset
        self.pretrained_urls = {"cifar10": AKAMASTER + pretrained_file} if pretrained_file else {}
        self.description = description or f"CIFAR ResNet-{depth} (He et al. 2016, option-A shortcuts)"

    def default_arch(self, name, num_classes, input_shape):
        return cifar_resnet_arch(self.name, self.depth, self.width, num_classes, input_shape[0])

    def pretrained_state_dict(self, name, dataset):
        url = self.pretrained_urls.get(dataset)
        if url is None:
            have = ", ".join(sorted(self.pretrained_urls)) or "none"
            raise HarnessError(f"no pretrained weights for model {name} on {dataset} (available for: {have})")
        return load_url_state_dict(url)

    def build(self, arch: dict) -> nn.Module:
        return CifarResNet(arch)

    def adapt_state_dict(self, state: dict) -> dict:
        if "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        return {k.removeprefix("module."): v for k, v in state.items()}


def cifar_resnets() -> list[Callable[[], CifarResNetFamily]]:
    return [
        partial(CifarResNetFamily, "resnet20", 20, pretrained_file="resnet20-12fca82f.th"),
        partial(CifarResNetFamily, "resnet32", 32, pretrained_file="resnet32-d509ac18.th"),
        partial(CifarResNetFamily, "resnet44", 44, pretrained_file="resnet44-014dd654.th"),
        partial(CifarResNetFamily, "resnet56", 56, pretrained_file="resnet56-4bfd9763.th"),
        partial(CifarResNetFamily, "resnet110", 110, pretrained_file="resnet110-1d1ed7c2.th"),
        partial(CifarResNetFamily, "tiny-resnet", 20, width=8, default_dataset="digits",
                description="ResNet-20 layout at width 8, trained on the fly (the offline demo)"),
    ]
