"""What the built-in structures need of a network, as protocols: a new architecture that
offers one is pruned by the existing structures without surgery code of its own. Plugins take
them from :mod:`harness.api`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class ResidualBlockNetwork(Protocol):
    """What the built-in ``resnet-block`` structure needs of a network: residual blocks whose
    input and output shapes match can be removed (the shortcut remains). A network may offer
    this protocol, :class:`ChannelWidthNetwork`, or both."""

    arch: dict  # its JSON-able architecture spec

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """``[(site, block)]`` in forward order (site: the block's module path)."""

    def removable_blocks(self) -> list[str]:
        """Sites of the blocks with an identity shortcut: the ones that may go."""

    def residual_bn(self, site: str) -> nn.Module:
        """The last normalisation of a block's residual branch: zeroing it ablates the block."""

    def arch_without_blocks(self, sites) -> tuple[dict, dict]:
        """The spec without those blocks and the ``rename`` map of :func:`harness.surgery.rebuild`."""


@runtime_checkable
class ChannelWidthNetwork(Protocol):
    """What the built-in ``resnet-filter`` structure needs of a network: convolutions whose
    output channels can be removed together with their batch-norm channels and the matching
    input channels of the next layer."""

    arch: dict

    def width_sites(self) -> list[tuple[str, nn.Module, nn.Module, nn.Module]]:
        """``[(site, conv, bn, next_layer)]`` for every convolution whose width may change."""

    def arch_with_widths(self, widths: dict[str, int]) -> dict:
        """The spec with those convolutions narrowed to the given output channels."""
