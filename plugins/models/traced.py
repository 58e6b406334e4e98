"""Any torchvision or timm network the built-in families do not know (``torchvision:mobilenet_v2``,
``timm:convnext_atto``, ``timm:efficientnet_b0``, ``torchvision:vgg11_bn`` ...), pruned through
its traced structure rather than a hand-written spec: channel groups of Torch-Pruning's
dependency graph (``traced-channel``) and residual blocks found by probing (``traced-block``).

``torchvision:<name>`` and ``timm:<name>`` come here when the ResNet and ViT families do not
claim the name; ``traced:torchvision:resnet18`` asks for this path explicitly.

Spec: ``{"model": name, "family": "traced", "source": "torchvision" | "timm", "variant":
"mobilenet_v2", "kwargs": {...}, "input_shape": [3, 32, 32], "removed": [operation, ...]}``.
``removed`` is the surgery log of :func:`harness.surgery.replay`: the pruned network is the
fresh one after those operations, so a model file needs its weights and this spec only.

Weights: ``--pretrained`` takes torchvision's default ImageNet weights (through torch.hub's
cache) or timm's (through the Hugging Face cache, ``HF_HUB_OFFLINE=1``); tensors whose shapes
differ here (the classifier for other than 1000 classes) keep their fresh initialisation.
The networks keep their ImageNet stems: on 32x32 images the last feature maps are 1x1.
"""

from __future__ import annotations

import difflib

from torch import nn

from harness.api import Option, checkpoint_tensors, load_url_state_dict
from harness.errors import HarnessError, warn
from harness.traced import TracedFamily
from harness_plugins.models.blocks import fit_shapes
from harness_plugins.models.hub import from_hub
from harness_plugins.models.timm_vit import parse_kwargs

PREFIX = "traced:"
SOURCES = ("torchvision", "timm")
EXAMPLES = {"torchvision": "torchvision:mobilenet_v2, torchvision:efficientnet_b0",
            "timm": "timm:convnext_atto, timm:vit_tiny_patch16_224"}


def split_name(name: str) -> tuple[str, str]:
    """(source, variant) of ``torchvision:mobilenet_v2`` or ``traced:timm:convnext_atto``."""
    source, _, variant = name.removeprefix(PREFIX).partition(":")
    if source not in SOURCES or not variant:
        raise HarnessError(f"unknown traced model {name!r}; valid choices: {', '.join(EXAMPLES.values())}")
    return source, variant


def create(source: str, variant: str, kwargs: dict, pretrained: bool = False) -> nn.Module:
    if source == "timm":
        import timm

        return timm.create_model(variant, pretrained=pretrained, **kwargs)
    import torchvision

    return torchvision.models.get_model(variant, **kwargs)


class TracedLibraryFamily(TracedFamily):
    """torchvision's and timm's networks, traced (the core's :class:`harness.traced.TracedFamily`
    gives the spec, the replayed surgery, the structures and the training defaults)."""

    name = PREFIX
    description = ("any other torchvision or timm network (torchvision:mobilenet_v2, timm:convnext_atto): channel "
                   "groups of Torch-Pruning's dependency graph and probed residual blocks")
    # names of these prefixes that their own family does not claim come here
    fallback_for = ("torchvision:", "timm:")
    options = TracedFamily.options + (
        Option("traced_kwargs", {}, "keyword arguments of the torchvision or timm constructor of a traced network, "
               "e.g. aux_logits=False (Inception-v3 and GoogLeNet without their training-only auxiliary classifiers)",
               parse=parse_kwargs, affects_training=True),)

    def __init__(self):
        # the architecture last made for each name: create_model asks for it before the
        # pretrained weights, which are then fitted to it (its classes)
        self._made: dict[str, dict] = {}
        self.user_kwargs: dict = {}

    def configure(self, options):
        self.user_kwargs = dict(options.get("traced_kwargs") or {})

    def check_name(self, name):
        source, variant = split_name(name)
        if source == "timm":
            import timm

            names = timm.list_models()
        else:
            import torchvision

            names = torchvision.models.list_models()
        if variant not in names:
            close = ", ".join(f"{source}:{n}" for n in difflib.get_close_matches(variant, names, n=4, cutoff=0.6))
            raise HarnessError(f"unknown {source} model {variant!r}; valid choices: {close + ', or ' if close else ''}"
                               f"any name of {source}'s list_models(), e.g. {EXAMPLES[source]}")

    def default_arch(self, name, num_classes, input_shape):
        self.check_name(name)
        source, variant = split_name(name)
        if len(input_shape) != 3:
            raise HarnessError(f"{name} takes images (C, H, W); this data set gives inputs of shape {tuple(input_shape)}")
        kwargs = {**self.user_kwargs, "num_classes": num_classes}
        if source == "timm":
            kwargs["in_chans"] = input_shape[0]
        elif input_shape[0] != 3:
            raise HarnessError(f"{name} takes 3-channel images; this data set has {input_shape[0]} channels")
        arch = {"model": name, "family": "traced", "source": source, "variant": variant, "kwargs": kwargs,
                "input_shape": list(input_shape), "removed": []}
        self._made[name] = arch
        return arch

    def create_network(self, arch: dict) -> nn.Module:
        """A fresh network of the spec's source, before the logged surgery."""
        return create(arch["source"], arch["variant"], arch["kwargs"])

    def pretrained_state_dict(self, name, dataset):
        source, variant = split_name(name)
        if source == "timm":
            state = from_hub(lambda: create(source, variant, {}, pretrained=True), f"timm model {variant}",
                             "put them in the Hugging Face cache and set HF_HUB_OFFLINE=1, or give "
                             "--checkpoint FILE").state_dict()
        else:
            import torchvision

            state = load_url_state_dict(torchvision.models.get_model_weights(variant).DEFAULT.url)
        state = checkpoint_tensors(state, "net.")  # with its metadata: MNASNet reads it
        if name not in self._made:
            return state
        fitted, kept = fit_shapes(state, self.build(self._made[name]).state_dict())
        if kept:
            warn(f"{name}: published weights, except {', '.join(kept)} (their shapes differ here), which start "
                 "from fresh initialisation")
        return fitted



def traced_models() -> list[type[TracedLibraryFamily]]:
    return [TracedLibraryFamily]
