"""A transformer for tabular rows in the manner of the FT-Transformer (Gorishniy et al.,
NeurIPS 2021): every feature becomes a token through its own linear embedding
(``value * w_f + b_f``), a learnt class token is prepended, a stack of pre-norm timm
``Block``\\ s mixes them, and a linear head reads the class token after a final LayerNorm.

Spec: ``{"model": "tabular-transformer", "family": "tabular_transformer", "features": F,
"num_classes": K, "dim": D, "blocks": [{"heads": h, "head_dim": d, "mlp": hidden}, ...]}``.
Its sizes come from ``--tt-depth``, ``--tt-heads``, ``--tt-head-dim`` and ``--tt-mlp-ratio``
(token width D = heads x head_dim).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from harness.api import ModelFamily, Option
from harness.errors import HarnessError
from harness_plugins.models.timm_vit import resize_block
from harness_plugins.models.blocks import arch_with_block_sizes, block_index, listed_arch_without_blocks


class TabularTransformer(nn.Module):
    """Follows the transformer protocol of the structures; sites are ``encoder.<i>``."""

    def __init__(self, arch: dict):
        from timm.models.vision_transformer import Block

        super().__init__()
        self.arch = copy.deepcopy(arch)
        features, dim = arch["features"], arch["dim"]
        bound = 1 / math.sqrt(dim)  # the FT-Transformer's initialisation of its embeddings
        self.feature_weight = nn.Parameter(torch.empty(features, dim).uniform_(-bound, bound))
        self.feature_bias = nn.Parameter(torch.empty(features, dim).uniform_(-bound, bound))
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim).uniform_(-bound, bound))
        blocks = []
        for spec in arch["blocks"]:
            block = Block(dim, num_heads=1, mlp_ratio=1.0, qkv_bias=True)
            resize_block(block, spec)
            blocks.append(block)
        self.encoder = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, arch["num_classes"])

    def blocks(self) -> list[tuple[str, nn.Module]]:
        return [(f"encoder.{i}", block) for i, block in enumerate(self.encoder)]

    def arch_without_blocks(self, sites) -> tuple[dict, dict[str, str]]:
        return listed_arch_without_blocks(self, sites, "encoder.")

    def arch_with_heads(self, heads: dict[str, int]) -> dict:
        return arch_with_block_sizes(self, "heads", heads)

    def arch_with_mlp(self, hidden: dict[str, int]) -> dict:
        return arch_with_block_sizes(self, "mlp", hidden)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) rows -> (N, 1 + F, D): the class token, then one token per feature."""
        tokens = x.unsqueeze(-1) * self.feature_weight + self.feature_bias
        return torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)

    def forward_to(self, site: str, x: torch.Tensor) -> torch.Tensor:
        """The input of the block that holds ``site`` (a block or a module inside one)."""
        h = self._tokens(x)
        for block in self.encoder[: block_index(self.blocks(), site)]:
            h = block(h)
        return h

    def forward_from(self, site: str, h: torch.Tensor) -> torch.Tensor:
        """Logits, given the input ``h`` of the block that holds ``site``."""
        for block in self.encoder[block_index(self.blocks(), site):]:
            h = block(h)
        return self.head(self.norm(h[:, 0]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The class token after the final norm."""
        return self.norm(self.encoder(self._tokens(x))[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _positive(kind):
    return lambda value: None if kind(value) > 0 else "must be positive"


class TabularTransformerFamily(ModelFamily):
    name = "tabular-transformer"
    description = ("FT-Transformer-style network for tabular rows: a token per feature plus a class token, "
                   "pre-norm timm blocks (--tt-depth, --tt-heads, --tt-head-dim, --tt-mlp-ratio)")
    default_dataset = "shuttle"
    default_structures = ("layer", "head", "neuron")
    structure_names = {"layer": "transformer-block", "head": "attention-head", "neuron": "mlp-neuron"}
    optimizer = "adamw"
    finetune_lr = 5e-4
    scratch_lr = 1e-3
    options = (
        Option("tt_depth", 4, "tabular-transformer: encoder blocks", parse=int, check=_positive(int),
               affects_training=True),
        Option("tt_heads", 8, "tabular-transformer: attention heads per block", parse=int, check=_positive(int),
               affects_training=True),
        Option("tt_head_dim", 16, "tabular-transformer: dimension of each head (token width = heads x head dim)",
               parse=int, check=_positive(int), affects_training=True),
        Option("tt_mlp_ratio", 2.0, "tabular-transformer: MLP hidden units per token dimension",
               parse=float, check=_positive(float), affects_training=True),
    )

    def __init__(self):
        self.sizes = {option.name: option.default for option in self.options}

    def configure(self, options: dict) -> None:
        self.sizes = {option.name: options.get(option.name, option.default) for option in self.options}

    def default_arch(self, name, num_classes, input_shape):
        if len(input_shape) != 1:
            raise HarnessError(f"{name} takes rows of features (a tabular data set such as shuttle); "
                               f"this data set gives inputs of shape {tuple(input_shape)}")
        heads, head_dim = self.sizes["tt_heads"], self.sizes["tt_head_dim"]
        dim = heads * head_dim
        hidden = max(1, round(dim * self.sizes["tt_mlp_ratio"]))
        return {"model": name, "family": "tabular_transformer", "features": input_shape[0],
                "num_classes": num_classes, "dim": dim,
                "blocks": [{"heads": heads, "head_dim": head_dim, "mlp": hidden} for _ in range(self.sizes["tt_depth"])]}

    def build(self, arch: dict) -> nn.Module:
        return TabularTransformer(arch)


def tabular_transformers() -> list[type[TabularTransformerFamily]]:
    return [TabularTransformerFamily]
