"""Vision Transformers of timm by name (``--model timm:vit_tiny_patch16_224``,
``timm:deit_tiny_patch16_224``, ...), wrapped so that the transformer structures
(plugins/structures.py) can remove their encoder blocks, attention heads and MLP neurons.

Spec: ``{"model": "timm:<name>", "family": "timm", "timm_name": name, "kwargs": {...},
"blocks": [{"heads": h, "head_dim": d, "mlp": hidden}, ...]}``. ``kwargs`` are the
arguments of ``timm.create_model`` (the image size, channels and classes of the data set
plus ``--timm-kwargs``); the blocks list is the depth and each kept block's sizes.

timm is imported only when a model is made: loading the plugins (every ``harness``
command) stays fast.
"""

from __future__ import annotations

import ast
import copy
import functools

import torch
from torch import nn

from harness.api import ModelFamily, Option, checkpoint_tensors
from harness.errors import HarnessError, first_line
from harness_plugins.structures import transformer_block_problem
from harness_plugins.models.blocks import arch_with_block_sizes, block_index, listed_arch_without_blocks
from harness_plugins.models.hub import from_hub

PREFIX = "timm:"
EXAMPLES = "timm:vit_tiny_patch16_224, timm:deit_tiny_patch16_224 (the names of timm.list_models('vit_*'))"



# ---------------------------------------------------------------- blocks of any size
def block_spec(block: nn.Module) -> dict:
    """The sizes of a timm ``Block`` that pruning changes."""
    return {"heads": block.attn.num_heads, "head_dim": block.attn.head_dim, "mlp": block.mlp.fc1.out_features}


def resize_block(block: nn.Module, spec: dict) -> None:
    """Give a freshly built timm ``Block`` the sizes of ``spec`` (heads, head_dim, MLP
    hidden units), replacing its attention and MLP where they differ and keeping every
    other setting of theirs (biases, dropout, activation)."""
    from timm.layers import Attention, Mlp

    attn, mlp = block.attn, block.mlp
    dim = attn.qkv.in_features
    if (attn.num_heads, attn.head_dim) != (spec["heads"], spec["head_dim"]):
        block.attn = Attention(dim, num_heads=spec["heads"], attn_head_dim=spec["head_dim"],
                               qkv_bias=attn.qkv.bias is not None, proj_bias=attn.proj.bias is not None,
                               attn_drop=attn.attn_drop.p, proj_drop=attn.proj_drop.p)
    if mlp.fc1.out_features != spec["mlp"]:
        new = Mlp(dim, spec["mlp"], mlp.fc2.out_features, bias=(mlp.fc1.bias is not None, mlp.fc2.bias is not None),
                  drop=(mlp.drop1.p, mlp.drop2.p))
        new.act = mlp.act  # the same activation module (GELU, tanh GELU, ...), which holds no weights
        block.mlp = new


# ---------------------------------------------------------------- the wrapper
class TimmViT(nn.Module):
    """A timm VisionTransformer (``self.net``) with the transformer protocol of the
    structures: sites are ``net.blocks.<i>``."""

    def __init__(self, arch: dict, net: nn.Module):
        super().__init__()
        self.arch = copy.deepcopy(arch)
        self.net = net

    def blocks(self) -> list[tuple[str, nn.Module]]:
        return [(f"net.blocks.{i}", block) for i, block in enumerate(self.net.blocks)]

    def arch_without_blocks(self, sites) -> tuple[dict, dict[str, str]]:
        return listed_arch_without_blocks(self, sites, "net.blocks.")

    def arch_with_heads(self, heads: dict[str, int]) -> dict:
        return arch_with_block_sizes(self, "heads", heads)

    def arch_with_mlp(self, hidden: dict[str, int]) -> dict:
        return arch_with_block_sizes(self, "mlp", hidden)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens entering the first block (what timm's forward_features does before its blocks)."""
        net = self.net
        return net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed(x))))

    def _features_from_tokens(self, h: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.norm(h), pre_logits=True)

    def forward_to(self, site: str, x: torch.Tensor) -> torch.Tensor:
        """The input of the block that holds ``site`` (a block or a module inside one)."""
        h = self._embed(x)
        for block in self.net.blocks[: block_index(self.blocks(), site)]:
            h = block(h)
        return h

    def forward_from(self, site: str, h: torch.Tensor) -> torch.Tensor:
        """Logits, given the input ``h`` of the block that holds ``site``."""
        for block in self.net.blocks[block_index(self.blocks(), site):]:
            h = block(h)
        return self.net.head(self._features_from_tokens(h))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-logits: the class token (or pooled tokens) after the final norm."""
        return self._features_from_tokens(self.net.blocks(self._embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head(self.forward_features(x))


# ---------------------------------------------------------------- the family
def parse_kwargs(value) -> dict:
    """``patch_size=4,depth=6,global_pool=avg`` -> {"patch_size": 4, "depth": 6, "global_pool": "avg"}:
    numbers and True/False/None are Python literals, anything else a string. A dict (from a
    config file) is taken as is."""
    if isinstance(value, dict):
        return dict(value)
    out = {}
    for item in filter(None, (part.strip() for part in str(value).split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{item!r} is not name=value")
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()
    return out


@functools.lru_cache(maxsize=None)
def model_class(timm_name: str) -> type:
    """The class of a timm model (created on the meta device: only the class is needed)."""
    import timm

    with torch.device("meta"):
        return type(timm.create_model(timm_name, pretrained=False))


class TimmFamily(ModelFamily):
    name = PREFIX
    description = ("Vision Transformers of timm by name (timm:vit_tiny_patch16_224, timm:deit_small_patch16_224, ...); "
                   "--timm-kwargs passes create_model arguments (patch_size=4,depth=6); --pretrained uses timm's "
                   "Hugging Face weights (the hub cache works offline)")
    default_dataset = "cifar10"
    # neurons on request: KL scoring of thousands of MLP units is slow on a CPU
    default_structures = ("layer", "head")
    structure_names = {"layer": "transformer-block", "head": "attention-head", "neuron": "mlp-neuron"}
    optimizer = "adamw"
    finetune_lr = 5e-4
    scratch_lr = 1e-3
    options = (Option("timm_kwargs", {}, "keyword arguments of timm.create_model for timm:<model>, "
                      "e.g. patch_size=4,depth=6,embed_dim=192", parse=parse_kwargs, affects_training=True),)

    def __init__(self):
        self.user_kwargs: dict = {}
        self._create_kwargs: dict[str, dict] = {}  # per model name, what default_arch created

    def configure(self, options: dict) -> None:
        self.user_kwargs = dict(options.get("timm_kwargs") or {})

    def claims(self, name):
        """timm's Vision Transformers; its other networks are the traced family's."""
        try:
            self.check_name(name)
        except HarnessError:
            return False
        return True

    def check_name(self, name):
        import timm
        from timm.models.vision_transformer import VisionTransformer

        timm_name = name.removeprefix(PREFIX)
        if not timm.is_model(timm_name):
            raise HarnessError(f"unknown timm model {timm_name!r}; valid choices: {EXAMPLES}")
        kind = model_class(timm_name)
        if kind is not VisionTransformer:
            raise HarnessError(f"timm model {timm_name} is a {kind.__name__}, not a VisionTransformer; "
                               f"valid choices: {EXAMPLES}")

    def default_arch(self, name, num_classes, input_shape):
        import timm

        timm_name = name.removeprefix(PREFIX)
        self.check_name(name)
        if len(input_shape) != 3:
            raise HarnessError(f"{name} takes images (C, H, W); this data set gives inputs of shape {tuple(input_shape)}")
        channels, height, width = input_shape
        kwargs = {**self.user_kwargs, "img_size": height if height == width else [height, width],
                  "in_chans": channels, "num_classes": num_classes}
        with torch.device("meta"):  # only the shapes are needed here
            try:
                net = timm.create_model(timm_name, pretrained=False, **kwargs)
            except Exception as exc:
                raise HarnessError(f"cannot create timm model {timm_name} with {kwargs} ({first_line(exc)})") from None
        for i, block in enumerate(net.blocks):
            problem = transformer_block_problem(block)
            if problem:
                raise HarnessError(f"timm model {timm_name} cannot be pruned: block {i} {problem}")
        self._create_kwargs[name] = kwargs
        return {"model": name, "family": "timm", "timm_name": timm_name,
                "kwargs": {k: v for k, v in kwargs.items() if k != "depth"},  # the blocks list is the depth
                "blocks": [block_spec(block) for block in net.blocks]}

    def build(self, arch: dict) -> nn.Module:
        import timm

        net = timm.create_model(arch["timm_name"], pretrained=False, depth=len(arch["blocks"]), **arch["kwargs"])
        for block, spec in zip(net.blocks, arch["blocks"]):
            resize_block(block, spec)
        return TimmViT(arch, net)

    def pretrained_state_dict(self, name, dataset):
        """timm's published weights (ImageNet) for the model ``default_arch`` last made under
        this name, adapted by timm itself to its image size, channels and classes (the
        classifier is new when the classes differ); ``dataset`` does not choose them."""
        import timm

        timm_name = name.removeprefix(PREFIX)
        kwargs = self._create_kwargs.get(name, self.user_kwargs)
        net = from_hub(lambda: timm.create_model(timm_name, pretrained=True, **kwargs), f"timm model {timm_name}",
                       f"{_where_weights_come_from(timm_name)}, or give --checkpoint FILE")
        return {"net." + key: value for key, value in net.state_dict().items()}

    def adapt_state_dict(self, state: dict) -> dict:
        """Accepts this wrapper's state dicts and plain timm ones (also inside a
        ``state_dict`` or ``model`` entry, with a ``module.`` prefix)."""
        return checkpoint_tensors(state, "net.")

    def adopt(self, name, module):
        """A timm ``VisionTransformer`` given to harness.prune, when every block is one the
        transformer structures prune (:func:`transformer_block_problem`)."""
        if not type(module).__module__.startswith("timm."):  # no need to import timm to know
            return None
        from timm.models.vision_transformer import VisionTransformer

        if type(module) is not VisionTransformer or not len(module.blocks):
            return None
        if any(transformer_block_problem(block) for block in module.blocks):
            return None
        return OwnViTFamily(name, module)


class OwnViTFamily(TimmFamily):
    """A caller's timm Vision Transformer (harness.prune) as this family: fresh networks are
    copies of it, with the spec's depth and block sizes; its weights are the pretrained ones.
    Spec: ``{"model": name, "family": "timm", "source": "own", "variant": class name,
    "blocks": [{"heads": h, "head_dim": d, "mlp": hidden}, ...]}``."""

    options = ()
    family = "timm"

    def __init__(self, name: str, module: nn.Module):
        super().__init__()
        self.name, self.module = name, module
        self.description = (f"the {type(module).__name__} given is pruned as a timm Vision Transformer (the "
                            f"{PREFIX} family: blocks and attention heads)")

    def claims(self, name):
        return name == self.name

    def check_name(self, name):
        pass

    def default_arch(self, name, num_classes, input_shape):
        return {"model": self.name, "family": "timm", "source": "own", "variant": type(self.module).__name__,
                "blocks": [block_spec(block) for block in self.module.blocks]}

    def build(self, arch: dict) -> nn.Module:
        net = copy.deepcopy(self.module)
        # the kept blocks are the first ones, renamed (harness.surgery.rebuild carries their weights over)
        net.blocks = nn.Sequential(*list(net.blocks)[: len(arch["blocks"])])
        for block, spec in zip(net.blocks, arch["blocks"]):
            resize_block(block, spec)
        return TimmViT(arch, net)

    def pretrained_state_dict(self, name, dataset):
        return checkpoint_tensors(self.module.state_dict(), "net.")


def _where_weights_come_from(timm_name: str) -> str:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub_id:
        return "timm publishes no Hugging Face weights for it"
    return (f"they come from the Hugging Face hub repository {hub_id}: put its model.safetensors in the hub cache "
            f"($HF_HOME/hub, filled by `hf download {hub_id}` where there is network) and set HF_HUB_OFFLINE=1")


def timm_models() -> list[type[TimmFamily]]:
    return [TimmFamily]
