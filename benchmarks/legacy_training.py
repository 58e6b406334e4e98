"""The training loop that harness/training.py had before the engine (commit 7fb77f4),
kept verbatim as the baseline that benchmarks/train_throughput.py and
benchmarks/engine_accuracy.py measure the engine against: a plain fp32 loop at batch 128
that augments on the host and copies each batch to the device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import DataSplits
from harness.training import normalize


def legacy_cifar_augment(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero-padding by ``pad`` and random horizontal flip, batched."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None].to(x.device)
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :].to(x.device)
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def legacy_train(model: nn.Module, data: DataSplits, epochs: float, *, lr: float, batch_size: int,
                 weight_decay: float, seed: int, device: torch.device, train_subset: int | None = None,
                 optimizer: str = "sgd", desc: str = "train", progress: bool = False) -> nn.Module:
    """SGD with Nesterov momentum 0.9 (or AdamW) and a cosine learning rate over ``epochs``
    (may be fractional).
    An epoch is ``train_subset`` samples (default: the whole train split) drawn without
    replacement in a fresh seeded order. Trains ``model`` in place and returns it."""
    if epochs <= 0:
        return model
    g = torch.Generator().manual_seed(seed)
    n = len(data.train)
    per_epoch = min(train_subset or n, n)
    steps = max(1, math.ceil(epochs * per_epoch / batch_size))
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    order, pos = torch.randperm(n, generator=g), 0
    for step in range(steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=g), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        x = data.train.images[idx]
        if data.augment == "cifar":
            x = legacy_cifar_augment(x, g)
        x = normalize(x.to(device), data.mean, data.std)
        y = data.train.labels[idx].to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model


