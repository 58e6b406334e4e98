"""The interfaces of the plugin kinds. A plugin object needs a ``name`` and the methods
of its kind; subclassing these classes is convenient but not required. Every member a plugin
may leave out is declared here with what its absence means.

The hooks that hand these objects to the harness are in :mod:`harness.hookspecs`; which hook
registers which kind is the table in :mod:`harness.kinds`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from harness import checkpoints, measure, records, seeds, training
from harness.data import DataSplits, TensorSplit  # plugins take the data types from here
from harness.errors import HarnessError
# what plugins take from here though it lives lower in the core
from harness.networks import ChannelWidthNetwork, ResidualBlockNetwork  # noqa: F401
from harness.step import Candidate, Step
from harness.structure_types import Unit
from harness.progress import progress as progress_lines


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
    message for an impossible value, or None. ``affects_training`` says whether the option
    changes the network or its training, so that cached baselines are kept apart by it;
    left None, it does for a model family's and a data set's options (a width, a resolution)
    and does not for the other kinds' (an evaluator's, a metric's never retrain a baseline).

    A run stores only the options of the plugins it uses.
    """

    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = str
    check: Callable[[Any], str | None] | None = None
    affects_training: bool | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# ---------------------------------------------------------------- every kind
class Plugin:
    """What a plugin object of any kind has. A hook registers the class (or a factory: any
    call without arguments that returns the object); the harness builds one object to list
    and look up, and a fresh one for each run, which it configures with that run's options."""

    name: str
    description: str = ""  # one line for `harness plugins`
    options: Sequence[Option] = ()  # the settings it adds to `harness bench` and config files

    def configure(self, options: dict[str, Any]) -> None:
        """Called once on the run's own object with every resolved option of the run, before
        the run starts (a model family's sizes, a metric's bandwidth); default: nothing."""


# ---------------------------------------------------------------- models
class ModelFamily(Plugin):
    """Creates networks by name and rebuilds pruned ones from their architecture spec.

    ``arch`` is a JSON-able dict that fully describes the (possibly pruned) network; it
    always holds ``"model": <name>``. Together with a weights-only state dict it reloads
    a model without unpickling code. A family whose ``name`` ends in ``:`` (``timm:``)
    creates every model named ``<prefix><variant>``.
    """

    default_dataset: str = "digits"
    # structure types the pruning methods use by default, in tie-break order
    default_structures: tuple[str, ...] = ("layer", "filter")
    # which structure plugin prunes each type on this family's networks (type -> structure
    # name); a type left out goes to the highest-priority structure that supports the model
    structure_names: dict[str, str] = {}
    # the criterion runs use when --criterion is not given
    default_criterion: str = "kl"
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

    def adopt(self, name: str, module: nn.Module) -> ModelFamily | None:
        """For ``harness.prune``: a family (a new object) that prunes ``module``, a caller's own
        network, under the model name ``name`` (fresh networks are copies of ``module``, its
        weights the pretrained ones), when this family's structures suit it; None (the
        default) when they do not, and the traced family takes it."""
        return None

    def adapt_state_dict(self, state: dict) -> dict:
        """Turn a published checkpoint into this family's state-dict layout."""
        return state


# ---------------------------------------------------------------- data
class Dataset(Plugin):
    def load(self, data_dir: str | None, cache_dir: str, calib_size: int) -> DataSplits:
        raise NotImplementedError


# ---------------------------------------------------------------- helpers for plugins
# Plugins import harness, harness.api, harness.errors, harness.surgery, harness.traced,
# harness.export and harness.testing only (tests/test_docs.py checks it); these are the core's
# helpers they may use, with signatures that stay when the core's own functions change.

def derive_seed(*parts) -> int:
    """A 32-bit seed from the parts' repr (the run's seed and the place it is used), so that
    a resumed run, or another process, draws the same numbers."""
    return seeds.derive_seed(*parts)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Inputs standardised with a data set's ``mean`` and ``std`` (per channel for images
    (N, C, H, W), per feature for rows (N, F)): what models are fed."""
    return training.normalize(x, mean, std)


def accuracy(model: nn.Module, split: TensorSplit, data: DataSplits, device) -> float:
    """Top-1 accuracy (percent) of ``model`` on ``split``."""
    return training.accuracy(model, split, data, device)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one input (torch.utils.flop_counter; a multiply-add is 2)."""
    return measure.count_flops(model, input_shape)


def count_parameters(model: nn.Module) -> int:
    return measure.count_parameters(model)


def load_url_state_dict(url: str) -> dict:
    """Published weights through torch.hub's cache (no network when the file is there); a
    one-line error naming where to put the file when they cannot be had."""
    return checkpoints.load_url_state_dict(url)


def checkpoint_tensors(state: dict, prefix: str = "") -> dict:
    """A checkpoint's tensors (inside a ``state_dict`` or ``model`` entry when there is one,
    without DataParallel's ``module.``), each key under ``prefix`` (a wrapper's ``net.``)."""
    return checkpoints.checkpoint_tensors(state, prefix)


def write_file_atomically(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename: a killed process
    never leaves half a file (caches of data sets, for instance)."""
    records.atomic_write_bytes(path, data)


def progress(items, desc: str, *, bar: bool, total: int | None = None, quiet: bool = False):
    """Iterates ``items`` reporting on long phases: a bar on a terminal (``bar=True``), else
    a line on stderr once a phase has run a few seconds and at least one a minute."""
    return progress_lines(items, desc, bar=bar, total=total, quiet=quiet)


def predict(model: nn.Module, split: TensorSplit, data: DataSplits, device) -> torch.Tensor:
    """Logits of ``model`` on ``split`` (normalised with ``data``'s mean and std), in fp32 and
    eval mode, returned on the host: the evaluation helper plugins share with the core."""
    return training.predict(model, split, data, device)


def evaluate(model: nn.Module, split: TensorSplit, data: DataSplits, device) -> dict[str, float]:
    """``{"accuracy": percent, "loss": mean cross-entropy}`` of ``model`` on ``split``."""
    return training.evaluate(model, split, data, device)


# ---------------------------------------------------------------- structures
class Structure(Plugin):
    """Lists, ablates and physically removes units of one type. Knows nothing about
    importance (that is the criteria's business).

    ``type`` is what kind of unit this is: ``layer``, ``filter``, ``head``, ``neuron`` or
    a new one. Several structures may share a type, each for the models it ``supports``;
    decisions are recorded by type, as a letter: L, F, H, N for the built-in types, else
    ``letter`` or the type's first letter, upper case (two types of one run may not share
    one). Units that carry an
    ``index`` share their site with others: the loop always leaves one of them.
    """

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
        """The normalisation parameters (or their entries) that ablating the unit changes, each
        layer's scale then shift: a filter's batch-norm scale and shift, for criteria of your
        own such as BN-gamma; ``[]`` when ablating it changes none (an attention head).
        Nothing in prunebench calls it; docs/plugins.md gives the format per structure."""
        return []

    def prices(self, model: nn.Module, measure: str) -> dict[str, float]:
        """What removing one unit of each site saves in ``measure`` (``flops``, ``params`` or
        ``filters``, as the core counts them), worked out without building a smaller network;
        empty (the default): the core removes one unit of each site from a copy and measures it."""
        return {}


# ---------------------------------------------------------------- criteria
@dataclass
class CriterionContext:
    calib_inputs: torch.Tensor  # normalised calibration inputs on the run's device
    calib_labels: torch.Tensor
    seed: int
    progress: bool = False


class Criterion(Plugin):
    """Scores units; lower means less important. Scores are comparable across layers."""

    def supports(self, model: nn.Module, structure: "Structure") -> bool:
        """Whether it can score this structure's units on this model; checked before anything
        is trained, so a mismatch is a one-line error, not a failure after the baseline step."""
        return True

    def scores(self, model: nn.Module, structure: Structure, units: Sequence[Unit],
               ctx: CriterionContext) -> list[float]:
        raise NotImplementedError


# ---------------------------------------------------------------- similarity
class Similarity(Plugin):
    """Similarity of two representations (n x p and n x q) of the same n inputs,
    higher = more similar; ``maximum`` is what identical inputs give."""

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
class Method(Plugin):
    """The decision rule of one pruning iteration."""

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


class Evaluator(Plugin):
    """A measurement of a model, taken on the unpruned model and after each iteration
    (or only on the final model). ``evaluate`` returns a JSON-able dict; numbers at its
    top level become leaderboard columns ``<evaluator>.<key>``.

    """

    def evaluate(self, model: nn.Module, ctx: EvalContext) -> dict[str, Any]:
        raise NotImplementedError

    def track(self, phase: str) -> contextlib.AbstractContextManager:
        """A context manager the loop enters around each phase of the run (``baseline``,
        ``criterion``, ``candidates``, ``oracle``, ``finetune``), to measure the work itself
        (energy, for instance); default: nothing."""
        return contextlib.nullcontext()
