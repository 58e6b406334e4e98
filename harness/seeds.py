"""Seeds: where every random number of a run comes from, so that a resumed run, another
process or another device draws the same ones."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from harness.data import DataSplits
from harness.training import Recipe, train


def derive_seed(*parts) -> int:
    """A 32-bit seed from the parts' repr (the run's seed and the place it is used)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


def seeded_train(model: nn.Module, data: DataSplits, epochs: float, *, recipe: Recipe, seed: int,
                 device: torch.device | str, teacher: nn.Module | None = None, desc: str = "train",
                 progress: bool = False, quiet: bool = False) -> nn.Module:
    """:func:`harness.training.train` under a random state of its own, seeded with ``seed``
    (dropout included): the result depends neither on what ran before it nor on where, and
    nothing after it sees a changed random state. Candidates fine-tuned one after another,
    side by side on several GPUs or as Ray tasks all train this way."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if device.type == "cuda":  # this GPU's generator only: other threads may be training on the others
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        else:
            torch.manual_seed(seed)
        return train(model, data, epochs, recipe=recipe, seed=seed, device=device, teacher=teacher, desc=desc,
                     progress=progress, quiet=quiet)
