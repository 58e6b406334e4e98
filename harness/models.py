"""Creating models by name, loading weights, and saving/reloading pruned models as an
architecture spec plus a weights-only state dict (no pickled code)."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from harness import plugins
from harness.errors import HarnessError, first_line
from harness.records import atomic_write_bytes


def build_from_arch(arch: dict) -> nn.Module:
    """A network with fresh weights from an architecture spec (``arch["model"]`` names the family)."""
    return plugins.get("model", arch["model"]).build(arch)


def load_state(model: nn.Module, state: dict, source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
        raise HarnessError(f"checkpoint {source} does not match model {model.arch['model']}: {detail[:300]}") from None


def load_error(exc: Exception) -> str:
    """What went wrong in torch.load, without its advice to load untrusted files with
    ``weights_only=False`` (the unpickler's own complaint is the useful part)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        detail = next((line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()
                       if line.strip()), "")
        return f"the weights-only unpickler refused it: {detail}"
    if text.startswith("Weights only load failed"):  # the reason is the paragraph after torch's advice
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        reason = next((p for p in paragraphs[1:] if not p.startswith("Check the documentation")), "")
        return f"the weights-only unpickler refused it: {' '.join(reason.split())[:300]}"
    return first_line(exc)


def read_checkpoint(path: str) -> dict:
    if os.path.isdir(path):
        raise HarnessError(f"checkpoint {path} is a directory; give the weights file inside it")
    if not os.path.isfile(path):
        raise HarnessError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notice would be a second line
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HarnessError(f"checkpoint {path} is corrupt or not a weights-only state dict "
                           f"({load_error(exc)})") from None
    if not isinstance(state, dict):
        raise HarnessError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_url_state_dict(url: str) -> dict:
    """Published weights through torch.hub's cache: a file already in
    ``$TORCH_HOME/hub/checkpoints/`` is used without any network; its name's hash is checked."""
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True,
                                                  weights_only=True, progress=False)
    except Exception as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        raise HarnessError(f"cannot get pretrained weights {url} ({first_line(exc, 160)}); "
                           f"put the file at {cache}") from None


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], dataset: str,
                 checkpoint: str | None = None, pretrained: bool = False, family=None) -> nn.Module:
    """A new network by name; ``family`` is a run's own configured model family (default: the
    registered one)."""
    family = family or plugins.get("model", name)
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
    import io

    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"arch": model.arch, "state_dict": state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    blob = read_checkpoint(str(path))
    if "arch" not in blob or "state_dict" not in blob:
        raise HarnessError(f"{path} is not a harness model file (needs 'arch' and 'state_dict')")
    model = build_from_arch(blob["arch"])
    load_state(model, blob["state_dict"], str(path))
    return model.to(device).eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.lru_cache(maxsize=1)
def count_fused_attention_flops() -> None:
    """Make torch.utils.flop_counter count scaled_dot_product_attention on the CPU (once).

    The counter knows the CUDA kernels of ``F.scaled_dot_product_attention`` but not the
    CPU's fused kernel, so attention that uses it (timm's, by default) would count no
    attention matmuls at all. The formula is torch's own for the CUDA kernels: 2 FLOPs per
    multiply-add of q @ k^T and of attn @ v."""
    from torch.utils import flop_counter

    aten = torch.ops.aten
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None and forward not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(forward)
        def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs):
            return flop_counter.sdpa_flop_count(query, key, value)
    if backward is not None and backward not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(backward)
        def _sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
            return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one input, counted by torch.utils.flop_counter
    (a multiply-add counts as 2 FLOPs; convolutions and matmuls, fused attention included)."""
    from torch.utils.flop_counter import FlopCounterMode

    count_fused_attention_flops()  # here, so the count never depends on which plugins were imported

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape), device=device))
    model.train(was_training)
    return int(counter.get_total_flops())
