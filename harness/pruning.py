"""The Python entry point for people who bring their own model and data:
``harness.prune(model, train_loader, val_loader)`` runs the same pruning loop as
``harness bench`` on any ``nn.Module`` that Torch-Pruning can trace, with the same records,
and ``harness.load_pruned(run_or_file, model)`` rebuilds a pruned model from the records on
a fresh instance of the user's class (replaying the logged surgery, no pickled code).

Example (CIFAR-sized images; any loaders of ``(inputs, labels)`` batches will do)::

    import harness, torch, torchvision
    from torch.utils.data import DataLoader, TensorDataset

    net = torchvision.models.mobilenet_v2(num_classes=10)     # or your own nn.Module, trained
    train = DataLoader(TensorDataset(x_train, y_train), batch_size=128)
    val = DataLoader(TensorDataset(x_val, y_val), batch_size=256)
    result = harness.prune(net, train, val, method="cka", criterion="l1", iterations=3)
    print(result.flops_reduction_pct, result.val_accuracy, result.run_dir)
    small = result.model                                      # a smaller mobilenet_v2 object
    again = harness.load_pruned(result.run_dir, torchvision.models.mobilenet_v2(num_classes=10))

The loaders must give the inputs as the model takes them (already normalised): the harness
feeds them unchanged. One pass over each loader is kept in memory (a random augmentation is
drawn once). The model as given is the unpruned baseline (``baseline_epochs`` 0);
decisions read ``val_loader`` and, without ``test_loader``, so does the reported accuracy.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import functools
import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness import records, registry
from harness.api import DataSplits, Dataset, TensorSplit
from harness.baseline import split_digest
from harness.checkpoints import load_state, read_checkpoint, renamed
from harness.config import BenchConfig
from harness.errors import HarnessError, first_line
from harness.models import load_model
from harness.run import resume_bench, run_bench
from harness.settings import RUN_SETTINGS
from harness.traced import TracedFamily

OWN_PREFIX = "own:"


@dataclass
class PruneResult:
    model: nn.Module  # the kept pruned network: an object of the class given, smaller (on the CPU)
    run_dir: Path  # the run's records (iterations.jsonl, result.json, a model file per iteration)
    removed: list  # the surgery log that turns a fresh model into this one
    flops_reduction_pct: float
    params_reduction_pct: float
    val_accuracy: float  # of the kept model, on val_loader
    accuracy: float  # on test_loader (val_loader when none was given)
    decision_path: str  # one letter per iteration: L (blocks removed) or F (channels removed)
    family: str = "traced"  # the family that pruned it: "traced", or "timm" for a timm Vision Transformer


# How harness.prune differs from `harness bench`, whose defaults (harness.settings) it takes
# otherwise: the model as given is the unpruned model (its weights are the "pretrained" ones,
# no baseline step trains it), an epoch is the whole train_loader, the reported accuracy reads
# the whole test_loader, calibration takes 256 samples whatever the budget; and l1 (kl runs a
# forward pass per unit, slow on the networks people bring) and 3 iterations, its defaults
# since its first release.
PRUNE_DEFAULTS = dict(pretrained=True, baseline_epochs=0.0, scratch_epochs=0.0, train_subset=None, test_subset=None,
                      calib_size=256, criterion="l1", iterations=3)


def prune(model: nn.Module, train_loader, val_loader, *, test_loader=None, runs_dir: str | Path = "runs",
          name: str | None = None, **settings) -> PruneResult:
    """Prune ``model`` with the harness's loop (depth and width candidates each iteration,
    the method choosing). ``settings`` are ``harness bench`` settings by their Python names
    (``method="cka"``, ``criterion="l1"``, ``iterations=3``, ``candidate_epochs=0.5``,
    ``round_to=8``, ``device="cuda"``, ``seed=1``, ``budget="quick"``), with the command line's
    defaults but for :data:`PRUNE_DEFAULTS`, and plugins' options as ``options={"plain_layers": True}``. A run with ``name`` that was interrupted continues
    where it stopped when called again with the same arguments."""
    if not isinstance(model, nn.Module):
        raise HarnessError(f"harness.prune takes the network to prune as a torch.nn.Module; got {_what(model)}")
    valid = {s.name for s in RUN_SETTINGS} - {"model", "dataset"} | {"options"}  # options: the plugins' own
    unknown = sorted(set(settings) - valid)
    if unknown:
        raise HarnessError(f"unknown setting {', '.join(unknown)} of harness.prune; valid choices: "
                           f"{', '.join(sorted(valid))}")
    train, val = _materialise(train_loader, "train_loader"), _materialise(val_loader, "val_loader")
    test = _materialise(test_loader, "test_loader") if test_loader is not None else val
    if train.images.shape[1:] != val.images.shape[1:] or train.images.shape[1:] != test.images.shape[1:]:
        raise HarnessError(f"the loaders give inputs of different shapes: train {tuple(train.images.shape[1:])}, "
                           f"val {tuple(val.images.shape[1:])}, test {tuple(test.images.shape[1:])}")
    digest = _digest(model, train, val)
    model_name = f"{OWN_PREFIX}{type(model).__name__}-{digest}"
    family = functools.partial(own_family, model_name, model)
    print(f"harness.prune: {family().description}", flush=True)
    dataset_name = f"{OWN_PREFIX}data-{digest}"
    dataset = functools.partial(OwnDataset, dataset_name, train, val, test,
                                num_classes=int(max(train.labels.max(), val.labels.max(), test.labels.max())) + 1,
                                tested_on_val=test_loader is None)
    cfg = BenchConfig(model=model_name, dataset=dataset_name, runs_dir=str(runs_dir),
                      name=name or f"{type(model).__name__}-{digest}", **(PRUNE_DEFAULTS | settings))
    with registered(family, dataset):
        run_dir = Path(cfg.runs_dir) / cfg.name
        if records.read_iterations(run_dir):
            run_dir, _ = resume_bench(run_dir)
        else:
            run_dir, _ = run_bench(cfg)
        run = records.RunRecord.read(run_dir)
        final = run.through_final[-1]
        pruned = load_model(records.model_path(run_dir, run.final_iteration))
    return PruneResult(model=pruned.net, run_dir=run_dir, removed=pruned.arch.get("removed"),
                       # the unpruned model's record has no reductions (a run that kept iteration 0)
                       flops_reduction_pct=final.get("flops_reduction_pct", 0.0),
                       params_reduction_pct=final.get("params_reduction_pct", 0.0),
                       val_accuracy=final["val_accuracy"], accuracy=final["accuracy"],
                       decision_path=run.result["decision_path"], family=pruned.arch["family"])


def load_pruned(path: str | Path, model: nn.Module | Callable[[], nn.Module], iteration: int | None = None) -> nn.Module:
    """The pruned network of a run (its kept model, or ``iteration``'s) or of one model file,
    rebuilt on ``model`` (a fresh instance of the class that was pruned, left untouched, or a
    call without arguments that makes one): the logged surgery is replayed on a copy (a Vision
    Transformer's blocks and heads resized), then the weights load (weights only)."""
    return load_own_model(path, model, iteration).net.eval()


def load_own_model(path: str | Path, model: nn.Module | Callable[[], nn.Module], iteration: int | None = None):
    """What :func:`load_pruned` rebuilds, inside its family's wrapper (``.net`` is the network)."""
    path = Path(path)
    if path.is_dir():
        run = records.RunRecord.read(path)
        if iteration is None and (run is None or not run.complete):
            raise HarnessError(f"run {path} has not finished; give iteration=N (its model files: "
                               f"{', '.join(p.name for p in sorted((path / records.MODELS_DIR).glob('iter_*.pt')))})")
        path = records.model_path(path, run.final_iteration if iteration is None else iteration)
    blob = read_checkpoint(str(path))
    arch = blob.get("arch")
    if not isinstance(arch, dict) or not str(arch.get("model", "")).startswith(OWN_PREFIX):
        raise HarnessError(f"{path} is not a model file of a run of harness.prune (its spec names no model given "
                           "to it)")
    fresh = model if isinstance(model, nn.Module) else model()
    family = own_family(arch["model"], fresh)
    if getattr(family, "family", None) != arch.get("family"):
        raise HarnessError(f"{path} holds a network pruned by the {arch.get('family')} family; the "
                           f"{type(fresh).__name__} given goes to another family: give a fresh instance "
                           f"of {arch.get('variant', 'the class that was pruned')}")
    pruned = family.build(arch)
    load_state(pruned, blob["state_dict"], str(path))
    return pruned.eval()


def own_family(name: str, module: nn.Module):
    """The model family that prunes ``module``, a caller's network, as ``name``: the first
    registered family (by name) whose ``adopt`` takes it (timm's Vision Transformers go to the
    ViT family, whose structures remove blocks and heads), else the traced one."""
    for _, family in sorted(registry.registry("model").items()):
        adopted = family.adopt(name, module) if hasattr(family, "adopt") else None
        if adopted is not None:
            return adopted
    return OwnModelFamily(name, module)


def factory_from_text(text: str) -> Callable[[], nn.Module]:
    """``module:callable`` or ``module:callable(literal arguments)`` (``torchvision.models:resnet18
    (num_classes=10)``) as a call that makes a fresh network: the command line's way of naming
    the class a run of harness.prune pruned."""
    module_name, _, call = text.partition(":")
    try:
        tree = ast.parse(call.strip(), mode="eval").body
        args, kwargs = (), {}
        if isinstance(tree, ast.Call):
            args = tuple(ast.literal_eval(a) for a in tree.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in tree.keywords}
            tree = tree.func
        target = importlib.import_module(module_name)
        for attr in ast.unparse(tree).split("."):
            target = getattr(target, attr)
    except (SyntaxError, ValueError, ImportError, AttributeError, TypeError) as exc:
        raise HarnessError(f"--factory {text!r}: {type(exc).__name__}: {first_line(exc)}; give MODULE:CALLABLE or "
                           "MODULE:CALLABLE(ARGUMENTS), e.g. 'torchvision.models:resnet18(num_classes=10)'") from None
    return functools.partial(target, *args, **kwargs)


# ---------------------------------------------------------------- the run's own plugins
class OwnModelFamily(TracedFamily):
    """The caller's network as a traced model family: fresh networks are copies of it (their
    weights replaced on load), its own weights are the 'pretrained' ones."""

    family = "traced"

    def __init__(self, name: str, module: nn.Module):
        super().__init__()
        self.name, self.module = name, module
        self.description = (f"the {type(module).__name__} given is pruned as a traced network (Torch-Pruning's "
                            "channel groups, probed residual blocks)")

    def check_name(self, name):
        pass

    def default_arch(self, name, num_classes, input_shape):
        return {"model": self.name, "family": "traced", "source": "own", "variant": type(self.module).__name__,
                "kwargs": {}, "input_shape": list(input_shape), "removed": []}

    def create_network(self, arch):
        return copy.deepcopy(self.module)

    def pretrained_state_dict(self, name, dataset):
        return renamed(self.module.state_dict(), key=lambda k: "net." + k, value=lambda v: v.detach().cpu())


class OwnDataset(Dataset):
    def __init__(self, name, train, val, test, num_classes, tested_on_val):
        self.name = name
        self.splits = (train, val, test)
        self.num_classes = num_classes
        self.description = "the loaders given to harness.prune"
        self.tested_on_val = tested_on_val

    def load(self, data_dir, cache_dir, calib_size):
        train, val, test = self.splits
        if calib_size >= len(train) // 2:
            raise HarnessError(f"calib_size {calib_size} would leave too little to train on: train_loader gives "
                               f"{len(train)} samples; give at most {len(train) // 2 - 1}")
        rest, calib = train.hold_out(calib_size, seed=0)
        channels = train.images.shape[1] if train.images.dim() == 4 else train.images.shape[-1]
        label = "own data" + (" (accuracy on the validation loader: no test loader given)" if self.tested_on_val else "")
        return DataSplits(rest, calib, test, (0.0,) * channels, (1.0,) * channels, num_classes=self.num_classes,
                          label=label, val=val)


@contextlib.contextmanager
def registered(family: Callable[[], OwnModelFamily], dataset: Callable[[], OwnDataset]):
    """The caller's model and data (factories of them) as plugins for the length of a ``with``."""
    with registry.temporarily_registered("model", family, "harness.prune"), \
            registry.temporarily_registered("dataset", dataset, "harness.prune"):
        yield


def _what(obj) -> str:
    return f"a {type(obj).__module__}.{type(obj).__qualname__}".replace("a builtins.", "a ")


def _materialise(loader, what: str) -> TensorSplit:
    """Every ``(inputs, labels)`` batch of a loader, as one in-memory split: finite inputs and
    whole class indices from 0, one per input; anything else is one line naming the loader."""
    xs, ys = [], []
    shape = "(inputs, labels) batches (tuples or lists, as a DataLoader over a TensorDataset gives)"
    try:
        for batch in loader:
            if isinstance(batch, (dict, str, bytes)) or not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise HarnessError(f"{what} must give {shape}; it gave {_what(batch)}"
                                   + (f" with keys {', '.join(map(str, batch))}" if isinstance(batch, dict) else ""))
            x, y = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
            if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.dim() != 1 or len(y) != len(x):
                raise HarnessError(f"{what}'s labels must be whole class indices (an integer tensor of one label "
                                   f"per input); it gave {y.dtype} labels of shape {tuple(y.shape)} for "
                                   f"{len(x) if x.dim() else 0} inputs")
            xs.append(x.float().cpu())
            ys.append(y.long().cpu())
    except (TypeError, IndexError, KeyError, ValueError, RuntimeError) as exc:
        raise HarnessError(f"{what} must give {shape} ({type(exc).__name__}: {first_line(exc)})") from None
    if not xs:
        raise HarnessError(f"{what} gave no batches")
    images, labels = torch.cat(xs), torch.cat(ys)
    if int(labels.min()) < 0:
        raise HarnessError(f"{what} gives the label {int(labels.min())}: labels must be class indices 0, 1, 2, ...")
    bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
    if bad:
        raise HarnessError(f"{what} gives {bad} of {len(images)} inputs holding NaN or infinite values: every "
                           "input must be finite")
    return TensorSplit(images, labels)


def _digest(model: nn.Module, *splits: TensorSplit) -> str:
    """8 hex digits naming this model's weights and this data: another model or other data is
    another run, and cached baselines never mix."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for t in model.state_dict().values():
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for split in splits:
        digest.update(split_digest(split).encode())
    return digest.hexdigest()[:8]
