"""The interfaces of the plugin kinds. A plugin object needs a ``name`` and the methods
of its kind; subclassing these classes is convenient but not required."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn


class ModelFamily:
    """Creates networks by name and rebuilds pruned ones from their architecture spec.

    ``arch`` is a JSON-able dict that fully describes the (possibly pruned) network; it
    always holds ``"model": <name>``. Together with a weights-only state dict it reloads
    a model without unpickling code.
    """

    name: str
    default_dataset: str = "digits"
    pretrained_urls: dict[str, str] = {}  # dataset name -> URL of a state dict

    def default_arch(self, num_classes: int, in_channels: int) -> dict:
        raise NotImplementedError

    def build(self, arch: dict) -> nn.Module:
        """A network with ``model.arch == arch`` and freshly initialised weights."""
        raise NotImplementedError

    def adapt_state_dict(self, state: dict) -> dict:
        """Turn a published checkpoint into this family's state-dict layout."""
        return state


@dataclass
class TensorSplit:
    """Images as float tensors in [0, 1] (N, C, H, W), labels as int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None, seed: int = 0) -> "TensorSplit":
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return TensorSplit(self.images[idx], self.labels[idx])


@dataclass
class DataSplits:
    train: TensorSplit
    calib: TensorSplit  # held out of train: feeds the criteria and the similarity metric
    test: TensorSplit  # reporting only
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    augment: str | None = None  # "cifar" = pad-4 random crop + horizontal flip


class Dataset:
    name: str
    description: str = ""

    def load(self, data_dir: str | None, cache_dir: str, calib_size: int) -> DataSplits:
        raise NotImplementedError


@dataclass(frozen=True)
class Unit:
    """One prunable unit: ``site`` is a module path, ``index`` a channel (None: whole site)."""

    structure: str
    site: str
    index: int | None = None

    @property
    def key(self) -> str:
        return self.site if self.index is None else f"{self.site}:{self.index}"


class Structure:
    """Lists, ablates and physically removes units. Knows nothing about importance."""

    name: str

    def supports(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def units(self, model: nn.Module) -> list[Unit]:
        """Units that can be removed now."""
        raise NotImplementedError

    def ablate(self, model: nn.Module, units: Sequence[Unit]) -> contextlib.AbstractContextManager:
        """Temporarily zero the units' contribution (in place, restored on exit)."""
        raise NotImplementedError

    def remove(self, model: nn.Module, units: Sequence[Unit]) -> nn.Module:
        """A new, smaller network without the units; ``model`` is left untouched."""
        raise NotImplementedError

    def weights(self, model: nn.Module, unit: Unit) -> list[torch.Tensor]:
        """The weight tensors (or slices) that belong to the unit, for weight-based criteria."""
        raise NotImplementedError


@dataclass
class CriterionContext:
    calib_inputs: torch.Tensor  # normalised calibration images on the run's device
    calib_labels: torch.Tensor
    seed: int
    progress: bool = False


class Criterion:
    """Scores units; lower means less important. Scores are comparable across layers."""

    name: str

    def scores(self, model: nn.Module, structure: Structure, units: Sequence[Unit],
               ctx: CriterionContext) -> list[float]:
        raise NotImplementedError


class Similarity:
    """Similarity of two representations of the same n inputs, higher = more similar."""

    name: str
    description: str = ""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        raise NotImplementedError


@dataclass
class Candidate:
    structure: str
    units: list[Unit]
    model: nn.Module
    similarity: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step:
    """What a method sees in one iteration: the parent and the services of the loop."""

    iteration: int
    parent: nn.Module
    config: Any
    rng: Any  # random.Random seeded from (seed, iteration)
    finetune: Callable[[nn.Module, float], nn.Module]
    similarity: Callable[[nn.Module, nn.Module], float]


class Method:
    """The decision rule of one pruning iteration."""

    name: str
    # structures to build candidates for, in tie-break order
    candidate_structures: tuple[str, ...] = ("layer", "filter")

    def select(self, step: Step, candidates: list[Candidate]) -> Candidate:
        raise NotImplementedError


class Evaluator:
    """A measurement of a model, reported per iteration."""

    name: str

    def evaluate(self, model: nn.Module, ctx: Any) -> dict[str, Any]:
        raise NotImplementedError


