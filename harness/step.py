"""What a method's ``select`` gets: the iteration's :class:`Step` (the parent and the loop's
services) and its :class:`Candidate` s. Plugins take them from :mod:`harness.api`."""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from harness import training
from harness.config import BenchConfig
from harness.data import DataSplits, TensorSplit
from harness.errors import HarnessError
from harness.structure_types import Unit


@dataclass
class Candidate:
    type: str  # the type of the structure it removes: layer, filter, head, ... (Structure.type)
    units: list[Unit]
    model: nn.Module
    similarity: float | None = None  # the run's metric, when the method used it
    # JSON-able facts about the candidate, written to its decision record: the loop puts every
    # metric's similarity, validation accuracy and loss, and the oracle's verdict here
    info: dict[str, Any] = field(default_factory=dict)
    finetuned_epochs: float | None = None  # set once the step has fine-tuned it

    @property
    def structure(self) -> str:
        """The old name of :attr:`type` (a structure's *name* is ``Unit.structure``)."""
        warnings.warn("Candidate.structure is Candidate.type", DeprecationWarning, stacklevel=2)
        return self.type


@dataclass
class Step:
    """What a method sees in one iteration: the parent and the services of the loop."""

    iteration: int
    parent: nn.Module
    config: BenchConfig  # the run's resolved settings
    rng: random.Random  # seeded from (seed, iteration)
    finetune: Callable[[nn.Module, float], nn.Module]
    similarity: Callable[[nn.Module, nn.Module], float]
    # fine-tunes independent models, side by side on several GPUs when the run has them;
    # ``tags`` (optional) name each one's seed
    finetune_all: Callable[[list[nn.Module], float, list[tuple] | None], list[nn.Module]] | None = None
    # accuracy (percent) and mean cross-entropy ``{"accuracy": ..., "loss": ...}`` of a model on
    # the validation split: held out of training, never the test split
    validation: Callable[[nn.Module], dict[str, float]] | None = None
    data: DataSplits | None = None  # the run's data (train, calib, val; test is for reporting)
    # the representation of a model on the calibration split that the similarity metrics compare
    features: Callable[[nn.Module], torch.Tensor] | None = None
    device: torch.device | None = None  # where the run's models live

    def predict(self, model: nn.Module, split: TensorSplit) -> torch.Tensor:
        """Logits of ``model`` on one of the run's splits (``step.data.val``, ``step.data.calib``)."""
        return training.predict(model, split, self.data, self.device)

    def finetune_candidates(self, candidates: list[Candidate], epochs: float) -> None:
        """Fine-tunes every candidate's model (in place on each candidate), concurrently
        where the run can. Each candidate's seed comes from its structure type, and a
        candidate already fine-tuned for ``epochs`` in this step (the loop does so for its
        decision records) is not trained again: every method sees the same candidates."""
        todo = [c for c in candidates if c.finetuned_epochs != epochs]
        if not todo:
            return
        models = [c.model for c in todo]
        if self.finetune_all:
            trained = self.finetune_all(models, epochs, tags=[("candidate", c.type) for c in todo])
        else:
            trained = [self.finetune(m, epochs) for m in models]
        for cand, model in zip(todo, trained):
            cand.model, cand.finetuned_epochs = model, epochs

    def validate(self, candidate: Candidate) -> dict[str, float]:
        """The candidate's validation accuracy and loss (``val_accuracy``, ``val_loss``), kept
        in its ``info`` so that each is measured once."""
        if "val_accuracy" not in candidate.info:
            if self.validation is None:
                raise HarnessError("this run has no validation split (a record from before it existed)")
            result = self.validation(candidate.model)
            candidate.info["val_accuracy"] = round(result["accuracy"], 4)
            candidate.info["val_loss"] = round(result["loss"], 6)
        return {"val_accuracy": candidate.info["val_accuracy"], "val_loss": candidate.info["val_loss"]}
