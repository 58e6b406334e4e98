"""The data a run holds in memory: splits of tensors, and the set of them a data set plugin
loads. The bottom of the core: the training engine, the plugin interface and the loop all
read these types."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TensorSplit:
    """Inputs as float tensors (images in [0, 1] as (N, C, H, W); tabular rows as (N, F)),
    labels as int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None, seed: int = 0) -> TensorSplit:
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return TensorSplit(self.images[idx], self.labels[idx])

    def hold_out(self, n: int, seed: int) -> tuple[TensorSplit, TensorSplit]:
        """(the rest, ``n`` samples held out of it), drawn with a fixed seed."""
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        held, rest = perm[:n].sort().values, perm[n:].sort().values
        return TensorSplit(self.images[rest], self.labels[rest]), TensorSplit(self.images[held], self.labels[held])


@dataclass
class DataSplits:
    train: TensorSplit
    calib: TensorSplit  # held out of train: feeds the criteria and the similarity metric
    test: TensorSplit  # reporting only: no decision inside a run reads it
    mean: tuple[float, ...]  # per channel (images) or per feature (tabular)
    std: tuple[float, ...]
    num_classes: int
    augment: str | None = None  # "cifar" = pad-4 random crop + horizontal flip
    # what the data really is, for tables: "CIFAR-10 (JPEG)" is never mixed with "CIFAR-10"
    label: str = ""
    class_names: tuple[str, ...] = ()
    # held out of train by the core (``--val-size``), disjoint from calib: every decision
    # inside a run (stopping, the model kept, selectors that read accuracy) reads this split
    val: TensorSplit | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])
