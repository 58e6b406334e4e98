"""The interfaces of the plugin kinds. A plugin object needs a ``name`` and the methods
of its kind; subclassing these classes is convenient but not required.

The hooks that hand these objects to the harness are in :mod:`harness.hookspecs`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from harness.errors import HarnessError


# ---------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    """A setting a plugin adds to ``harness bench`` (as ``--name-with-dashes``) and to
    config files (as ``name_with_underscores``). Declare it in the plugin object's
    ``options`` tuple. Values reach evaluators through ``ctx.options[name]``; any plugin
    object of a run may also define ``configure(options: dict)``, which the loop calls
    once with every resolved option before the run starts.

    ``parse`` turns a command-line string into the value (config files may give the
    value already typed, which ``parse`` must accept too); ``check`` returns an error
    message for an impossible value, or None. ``affects_training`` says that the option
    changes the network or its training (a model family's sizes), so cached baselines are
    kept apart by it; other options (an evaluator's, a metric's) never retrain a baseline.

    A run stores only the options of the plugins it uses.
    """

    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = str
    check: Callable[[Any], str | None] | None = None
    affects_training: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# ---------------------------------------------------------------- models
class ModelFamily:
    """Creates networks by name and rebuilds pruned ones from their architecture spec.

    ``arch`` is a JSON-able dict that fully describes the (possibly pruned) network; it
    always holds ``"model": <name>``. Together with a weights-only state dict it reloads
    a model without unpickling code. A family whose ``name`` ends in ``:`` (``timm:``)
    creates every model named ``<prefix><variant>``.
    """

    name: str
    description: str = ""
    default_dataset: str = "digits"
    # structure types the pruning methods use by default, in tie-break order
    default_structures: tuple[str, ...] = ("layer", "filter")
    # which structure plugin prunes each type on this family's networks (type -> structure
    # name); a type left out goes to the highest-priority structure that supports the model
    structure_names: dict[str, str] = {}
    # training defaults of this family; the command line overrides them
    optimizer: str = "sgd"
    finetune_lr: float = 0.01
    scratch_lr: float = 0.1

    # prefixes of other families whose names this family takes when their own family does
    # not ``claims`` them (the traced family takes ``torchvision:mobilenet_v2``)
    fallback_for: tuple[str, ...] = ()

    def claims(self, name: str) -> bool:
        """Whether this prefix family builds ``name``; one that does not leaves it to a family
        whose ``fallback_for`` holds the prefix."""
        return True

    def check_name(self, name: str) -> None:
        """Raise HarnessError (naming the valid choices) when this family cannot build
        ``name``; called before anything is loaded. Only prefix families need it."""

    def default_arch(self, name: str, num_classes: int, input_shape: tuple[int, ...]) -> dict:
        raise NotImplementedError

    def build(self, arch: dict) -> nn.Module:
        """A network with ``model.arch == arch`` and freshly initialised weights."""
        raise NotImplementedError

    def pretrained_state_dict(self, name: str, dataset: str) -> dict:
        """Published weights for ``name`` trained on ``dataset`` (raise HarnessError when
        there are none or they cannot be had)."""
        raise HarnessError(f"no pretrained weights for model {name}")

    def adapt_state_dict(self, state: dict) -> dict:
        """Turn a published checkpoint into this family's state-dict layout."""
        return state


# ---------------------------------------------------------------- data
@dataclass
class TensorSplit:
    """Inputs as float tensors (images in [0, 1] as (N, C, H, W); tabular rows as (N, F)),
    labels as int64 (N,)."""

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

    def hold_out(self, n: int, seed: int) -> tuple["TensorSplit", "TensorSplit"]:
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


class Dataset:
    name: str
    description: str = ""

    def load(self, data_dir: str | None, cache_dir: str, calib_size: int) -> DataSplits:
        raise NotImplementedError


# ---------------------------------------------------------------- helpers for plugins
# Plugins import harness, harness.api, harness.errors, harness.surgery and harness.testing
# only (tests/test_docs.py checks it); these are the core's helpers they may use.

def derive_seed(*parts) -> int:
    """A 32-bit seed from the parts' repr (the run's seed and the place it is used), so that
    a resumed run, or another process, draws the same numbers."""
    from harness.bench import derive_seed as core_derive_seed

    return core_derive_seed(*parts)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Inputs standardised with a data set's ``mean`` and ``std`` (per channel for images
    (N, C, H, W), per feature for rows (N, F)): what models are fed."""
    from harness.training import normalize as core_normalize

    return core_normalize(x, mean, std)


def accuracy(model: nn.Module, split: TensorSplit, data: DataSplits, device) -> float:
    """Top-1 accuracy (percent) of ``model`` on ``split``."""
    from harness.training import accuracy as core_accuracy

    return core_accuracy(model, split, data, device)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one input (torch.utils.flop_counter; a multiply-add is 2)."""
    from harness.models import count_flops as core_count_flops

    return core_count_flops(model, input_shape)


def count_parameters(model: nn.Module) -> int:
    from harness.models import count_parameters as core_count_parameters

    return core_count_parameters(model)


def load_url_state_dict(url: str) -> dict:
    """Published weights through torch.hub's cache (no network when the file is there); a
    one-line error naming where to put the file when they cannot be had."""
    from harness.models import load_url_state_dict as core_load

    return core_load(url)


def write_file_atomically(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename: a killed process
    never leaves half a file (caches of data sets, for instance)."""
    from harness.records import atomic_write_bytes

    atomic_write_bytes(path, data)


def progress(items, desc: str, *, bar: bool, total: int | None = None, quiet: bool = False):
    """Iterates ``items`` reporting on long phases: a bar on a terminal (``bar=True``), else
    a line on stderr once a phase has run a few seconds and at least one a minute."""
    from harness.progress import progress as core_progress

    return core_progress(items, desc, bar=bar, total=total, quiet=quiet)


def predict(model: nn.Module, split: TensorSplit, data: DataSplits, device) -> torch.Tensor:
    """Logits of ``model`` on ``split`` (normalised with ``data``'s mean and std), in fp32 and
    eval mode, returned on the host: the evaluation helper plugins share with the core."""
    from harness.training import predict as core_predict

    return core_predict(model, split, data, device)


def evaluate(model: nn.Module, split: TensorSplit, data: DataSplits, device) -> dict[str, float]:
    """``{"accuracy": percent, "loss": mean cross-entropy}`` of ``model`` on ``split``."""
    from harness.training import evaluate as core_evaluate

    return core_evaluate(model, split, data, device)


# ---------------------------------------------------------------- network protocols
@runtime_checkable
class ResidualBlockNetwork(Protocol):
    """What the built-in ``resnet-block`` structure needs of a network: residual blocks whose
    input and output shapes match can be removed (the shortcut remains). A network may offer
    this protocol, :class:`ChannelWidthNetwork`, or both."""

    arch: dict  # its JSON-able architecture spec

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """``[(site, block)]`` in forward order (site: the block's module path)."""

    def removable_blocks(self) -> list[str]:
        """Sites of the blocks with an identity shortcut: the ones that may go."""

    def residual_bn(self, site: str) -> nn.Module:
        """The last normalisation of a block's residual branch: zeroing it ablates the block."""

    def arch_without_blocks(self, sites) -> tuple[dict, dict]:
        """The spec without those blocks and the ``rename`` map of :func:`harness.surgery.rebuild`."""


@runtime_checkable
class ChannelWidthNetwork(Protocol):
    """What the built-in ``resnet-filter`` structure needs of a network: convolutions whose
    output channels can be removed together with their batch-norm channels and the matching
    input channels of the next layer."""

    arch: dict

    def width_sites(self) -> list[tuple[str, nn.Module, nn.Module, nn.Module]]:
        """``[(site, conv, bn, next_layer)]`` for every convolution whose width may change."""

    def arch_with_widths(self, widths: dict[str, int]) -> dict:
        """The spec with those convolutions narrowed to the given output channels."""


# ---------------------------------------------------------------- structures
@dataclass(frozen=True)
class Unit:
    """One prunable unit: ``site`` is a module path, ``index`` a channel or head (None:
    the whole site, e.g. a residual block)."""

    structure: str
    site: str
    index: int | None = None

    @property
    def key(self) -> str:
        return self.site if self.index is None else f"{self.site}:{self.index}"


class Structure:
    """Lists, ablates and physically removes units of one type. Knows nothing about
    importance (that is the criteria's business).

    ``type`` is what kind of unit this is: ``layer``, ``filter``, ``head``, ``neuron`` or
    a new one. Several structures may share a type, each for the models it ``supports``;
    decisions are recorded by type, as a letter: L, F, H, N for the built-in types, else
    ``letter`` or the type's first letter, upper case (two types of one run may not share
    one). Units that carry an
    ``index`` share their site with others: the loop always leaves one of them.
    """

    name: str
    type: str = ""
    # when several structures of one type support a model and its family names none of them,
    # the highest priority wins (equal priorities: a warning naming both, then the first by name)
    priority: int = 0
    # the letter a new type's decisions are recorded with (default: its first letter, upper case)
    letter: str | None = None

    def supports(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def units(self, model: nn.Module) -> list[Unit]:
        """Units that can be removed now."""
        raise NotImplementedError

    def ablate(self, model: nn.Module, units: Sequence[Unit]) -> contextlib.AbstractContextManager:
        """Temporarily zero the units' contribution, restored on exit. It must do so by
        changing parameters in place: gradient-based criteria read that change."""
        raise NotImplementedError

    def remove(self, model: nn.Module, units: Sequence[Unit]) -> nn.Module:
        """A new, smaller network without the units; ``model`` is left untouched."""
        raise NotImplementedError

    def weights(self, model: nn.Module, unit: Unit) -> list[torch.Tensor]:
        """The weight tensors (or slices) that belong to the unit, for weight-based criteria."""
        raise NotImplementedError

    def normalization(self, model: nn.Module, unit: Unit) -> list[torch.Tensor]:
        """The normalisation parameters (or slices) that belong to the unit: a filter's
        batch-norm scale and shift, for criteria such as BN-gamma; ``[]`` when none belongs
        to the unit alone (an attention head)."""
        return []


# ---------------------------------------------------------------- criteria
@dataclass
class CriterionContext:
    calib_inputs: torch.Tensor  # normalised calibration inputs on the run's device
    calib_labels: torch.Tensor
    seed: int
    progress: bool = False


class Criterion:
    """Scores units; lower means less important. Scores are comparable across layers."""

    name: str
    description: str = ""

    def supports(self, model: nn.Module, structure: "Structure") -> bool:
        """Whether it can score this structure's units on this model; checked before anything
        is trained, so a mismatch is a one-line error, not a failure after the baseline step."""
        return True

    def scores(self, model: nn.Module, structure: Structure, units: Sequence[Unit],
               ctx: CriterionContext) -> list[float]:
        raise NotImplementedError


# ---------------------------------------------------------------- similarity
class Similarity:
    """Similarity of two representations (n x p and n x q) of the same n inputs,
    higher = more similar; ``maximum`` is what identical inputs give."""

    name: str
    description: str = ""
    maximum: float = 1.0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        raise NotImplementedError

    @staticmethod
    def matrices(x: torch.Tensor, y: torch.Tensor, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """Both representations as float64 matrices, one row per input, after checking
        that they describe the same inputs: every metric starts here."""
        x, y = x.double().flatten(1), y.double().flatten(1)
        if x.shape[0] != y.shape[0]:
            raise HarnessError(f"representations to compare must have one row per input in both; "
                               f"got {x.shape[0]} and {y.shape[0]} rows")
        if x.shape[0] < min_rows:
            raise HarnessError(f"comparing representations needs at least {min_rows} inputs; got {x.shape[0]}")
        return x, y


# ---------------------------------------------------------------- methods
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
    config: Any
    rng: Any  # random.Random seeded from (seed, iteration)
    finetune: Callable[[nn.Module, float], nn.Module]
    similarity: Callable[[nn.Module, nn.Module], float]
    # fine-tunes independent models, side by side on several GPUs when the run has them;
    # ``tags`` (optional) name each one's seed
    finetune_all: Callable[..., list[nn.Module]] | None = None
    # accuracy (percent) and mean cross-entropy ``{"accuracy": ..., "loss": ...}`` of a model on
    # the validation split: held out of training, never the test split
    validation: Callable[[nn.Module], dict[str, float]] | None = None
    data: DataSplits | None = None  # the run's data (train, calib, val; test is for reporting)
    # the representation of a model on the calibration split that the similarity metrics compare
    features: Callable[[nn.Module], torch.Tensor] | None = None
    device: torch.device | None = None  # where the run's models live

    def predict(self, model: nn.Module, split: TensorSplit) -> torch.Tensor:
        """Logits of ``model`` on one of the run's splits (``step.data.val``, ``step.data.calib``)."""
        return predict(model, split, self.data, self.device)

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


class Method:
    """The decision rule of one pruning iteration."""

    name: str
    description: str = ""

    def structures(self, offered: Sequence[str]) -> list[str]:
        """Which of the structure types that have removable units now get a candidate
        (``offered`` is in tie-break order: layer first)."""
        return list(offered)

    def select(self, step: Step, candidates: list[Candidate]) -> Candidate:
        raise NotImplementedError


# ---------------------------------------------------------------- evaluators
@dataclass
class EvalContext:
    """What an evaluator sees: the data, the run's settings and its earlier results."""

    data: DataSplits
    device: torch.device
    options: dict[str, Any]
    seed: int
    cache_dir: str
    iteration: int
    baseline: dict | None = None  # this evaluator's result on the unpruned model
    progress: bool = False
    # the run's unpruned model (loaded on first call; None at iteration 0), for evaluators that
    # measure against it side by side (speed-ups timed in one call, not hours apart)
    unpruned: Callable[[], nn.Module] | None = None


class Evaluator:
    """A measurement of a model, taken on the unpruned model and after each iteration
    (or only on the final model). ``evaluate`` returns a JSON-able dict; numbers at its
    top level become leaderboard columns ``<evaluator>.<key>``.

    An evaluator may also define ``track(phase)``, a context manager the loop enters
    around each phase of the run (``baseline``, ``criterion``, ``candidates``,
    ``finetune``), to measure the work itself (energy, for instance).
    """

    name: str
    description: str = ""
    options: Sequence[Option] = ()

    def evaluate(self, model: nn.Module, ctx: EvalContext) -> dict[str, Any]:
        raise NotImplementedError
