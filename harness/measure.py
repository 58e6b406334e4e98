"""What the core measures of a network itself, needing no plugin: FLOPs, parameters and
filters, and the eval mode every measurement of a network runs in."""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """The model in eval mode (batch norm on its running statistics, no dropout), every
    module's own mode restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_filters(model: nn.Module) -> int:
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


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
    with evaluating(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape), device=device))
    return int(counter.get_total_flops())
