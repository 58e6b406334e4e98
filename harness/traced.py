"""The traced wrapper: any classifier ``nn.Module`` as a network the harness can
prune without an architecture spec of its own. Its spec is the fresh network's recipe plus
the log of every removal (``arch["removed"]``), and :class:`TracedFamily` builds a network by
creating the fresh one and replaying the log (:func:`harness.surgery.replay`), so pruned
networks reload from weights alone. The built-in ``traced:`` family (torchvision and timm
networks) and ``harness.prune`` (the caller's own module) are traced families."""

from __future__ import annotations

import copy

import torch
from torch import nn

from harness.api import ModelFamily, Option
from harness.checkpoints import checkpoint_tensors
from harness.errors import HarnessError, first_line
from harness.measure import evaluating
from harness.surgery import replay


class TracedNetwork(nn.Module):
    """A network and the spec it was built from. Its classifier is the last convolution or
    linear layer the network runs (in eval mode): a linear layer, or SqueezeNet's 1x1
    convolution. ``forward_features`` is that layer's input, flattened: the representation
    similarity compares. A network that returns more than its logits in train mode
    (GoogLeNet's and Inception-v3's auxiliary classifiers) is trained on the logits, its first
    output; ``forward_all`` gives everything."""

    def __init__(self, arch: dict, net: nn.Module, classifier: str | None = None):
        super().__init__()
        self.arch = copy.deepcopy(arch)
        self.net = net
        self._classifier = classifier

    @property
    def classifier(self) -> str:
        if self._classifier is None:
            self._classifier = last_layer(self.net, self.traced_input_shape())
        return self._classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, tuple) else out

    def forward_all(self, x: torch.Tensor):
        return self.net(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        seen = []
        hook = self.net.get_submodule(self.classifier).register_forward_pre_hook(
            lambda module, args: seen.append(args[0]))
        try:
            self.net(x)
        finally:
            hook.remove()
        return seen[-1].flatten(1)

    # sites of the traced structures are module paths of this wrapper ("net.features.3")
    def traced_input_shape(self) -> tuple[int, ...]:
        return tuple(self.arch["input_shape"])

    def traced_ignored(self) -> list[str]:
        """Layers whose outputs never shrink: the classifier (its outputs are the classes)."""
        return [f"net.{self.classifier}"]


def parse_yes_no(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("yes", "no", "true", "false", "1", "0"):
        raise ValueError("give yes or no")
    return text in ("yes", "true", "1")


LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@torch.no_grad()
def last_layer(net: nn.Module, input_shape) -> str:
    """The last convolution or linear layer ``net`` runs on an input (in eval mode)."""
    ran = []
    hooks = [m.register_forward_pre_hook(lambda m, a, n=name: ran.append(n))
             for name, m in net.named_modules() if isinstance(m, LAYERS)]
    try:
        with evaluating(net):
            net(torch.zeros((1, *input_shape), device=next(net.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    if not ran:
        raise HarnessError(f"{type(net).__name__} runs no convolution or linear layer: no classifier to read "
                           "features from")
    return ran[-1]


class TracedFamily(ModelFamily):
    """Networks built by replaying their surgery log on a fresh network, which
    :meth:`create_network` makes from the spec. Spec: ``{"model": name, "family": "traced",
    "source": ..., "variant": ..., "kwargs": {...}, "input_shape": [C, H, W], "removed":
    [operation, ...]}``; :meth:`create_network` reads source, variant and kwargs. Pruned through the traced structures (``traced-block``,
    ``traced-channel``), trained with AdamW, as timm trains such networks: ConvNeXt's layer
    norms and layer scales are not made for SGD at 0.1."""

    default_dataset = "cifar10"
    default_structures = ("layer", "filter")
    structure_names = {"layer": "traced-block", "filter": "traced-channel"}
    # kl scores a unit by a forward pass with it ablated: a MobileNetV2 has 9,128 channel units
    default_criterion = "l1"
    optimizer = "adamw"
    finetune_lr = 5e-4
    scratch_lr = 1e-3
    options = (Option("plain_layers", False, "traced networks: the layer candidate may also remove plain "
                      "convolutions between two ReLUs that keep their input's shape, with their batch norm and the "
                      "second ReLU (VGG's 512->512 layers), besides residual blocks: yes or no", parse=parse_yes_no),)

    def create_network(self, arch: dict) -> nn.Module:
        """A fresh network of the spec, before the logged surgery."""
        raise NotImplementedError

    def build(self, arch: dict) -> nn.Module:
        try:
            net = self.create_network(arch)
        except Exception as exc:
            raise HarnessError(f"cannot create {arch['source']} model {arch['variant']} with {arch['kwargs']} "
                               f"({first_line(exc)})") from None
        return replay(TracedNetwork(arch, net), arch["input_shape"], arch["removed"])

    def adapt_state_dict(self, state: dict) -> dict:
        """This wrapper's state dicts and plain ones (also inside a ``state_dict`` or ``model``
        entry, with a ``module.`` prefix)."""
        return checkpoint_tensors(state, "net.")
