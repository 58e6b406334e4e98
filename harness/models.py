"""Creating models by name, and saving/reloading pruned models as an architecture spec plus a
weights-only state dict (no pickled code)."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from harness import checkpoints, measure, registry
from harness.checkpoints import load_state, read_checkpoint, renamed
from harness.deprecation import moved_names
from harness.errors import HarnessError
from harness.records import atomic_write_bytes
from harness.runplugins import Guarded


def family_of(name: str):
    """The registered model family of ``name``, guarded: a failure of its code is blamed on it,
    also when a structure's surgery or a reload calls it."""
    info = registry.current().entry("model", name)
    return Guarded(info.obj, "model", info)


def build_from_arch(arch: dict) -> nn.Module:
    """A network with fresh weights from an architecture spec (``arch["model"]`` names the family)."""
    if not isinstance(arch, dict) or not isinstance(arch.get("model"), str):
        raise HarnessError(f"an architecture spec must be a dict naming its model family under \"model\"; "
                           f"got {str(arch)[:80]}")
    return family_of(arch["model"]).build(arch)


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], dataset: str,
                 checkpoint: str | None = None, pretrained: bool = False, family=None) -> nn.Module:
    """A new network by name; ``family`` is a run's own model family (default: the registered
    one)."""
    family = family or family_of(name)
    if checkpoint and pretrained:
        raise HarnessError("give either --checkpoint or --pretrained, not both")
    model = family.build(family.default_arch(name, num_classes, tuple(input_shape)))
    if checkpoint:
        load_state(model, family.adapt_state_dict(read_checkpoint(checkpoint)), checkpoint)
    elif pretrained:
        load_state(model, family.adapt_state_dict(family.pretrained_state_dict(name, dataset)),
                   f"pretrained {name}")
    return model


def save_model(model: nn.Module, path: Path) -> None:
    """One file: ``{"arch": spec, "state_dict": tensors}``, loadable with weights_only=True."""
    buf = io.BytesIO()
    state = renamed(model.state_dict(), value=lambda v: v.detach().cpu())
    torch.save({"arch": model.arch, "state_dict": state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    blob = read_checkpoint(str(path))
    if "arch" not in blob or "state_dict" not in blob:
        raise HarnessError(f"{path} is not a harness model file (needs 'arch' and 'state_dict')")
    model = build_from_arch(blob["arch"])
    load_state(model, blob["state_dict"], str(path))
    return model.to(device).eval()


__getattr__ = moved_names(__name__, {
    "count_flops": (measure.count_flops, "harness.measure.count_flops"),
    "count_parameters": (measure.count_parameters, "harness.measure.count_parameters"),
    "count_fused_attention_flops": (measure.count_fused_attention_flops, "harness.measure.count_fused_attention_flops"),
    "load_url_state_dict": (checkpoints.load_url_state_dict, "harness.checkpoints.load_url_state_dict"),
    "load_error": (checkpoints.load_error, "harness.checkpoints.load_error"),
})
