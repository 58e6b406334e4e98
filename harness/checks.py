"""The checks of a run's inputs that need more than its settings' declarations: the device,
the cache folder, plugin options' values, what the criterion can score and the model against
the data; :mod:`harness.resolve` and the baseline step run them before anything is written."""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from harness import registry
from harness.config import BenchConfig
from harness.data import DataSplits
from harness.channel_groups import untouched
from harness.errors import HarnessError, first_line
from harness.training import normalize


def default_cache_dir() -> str:
    return os.environ.get("HARNESS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "prunebench"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError("--device cuda was asked for but no CUDA device is available; valid choices here: auto, cpu")
    return torch.device(name)


def parse_option(opt, value):
    """A plugin option's value parsed and checked (a one-line error when impossible)."""
    try:
        value = opt.parse(value) if isinstance(value, str) and opt.parse is not str else value
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        raise HarnessError(f"{opt.flag} {value!r} is not valid ({first_line(exc)})") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise HarnessError(f"{opt.flag} {value!r} must be a finite number")
    problem = opt.check(value) if opt.check else None
    if problem:
        raise HarnessError(f"{opt.flag} {value!r}: {problem}")
    return value


def check_model_takes_data(model: nn.Module, data: DataSplits, device: torch.device, cfg: BenchConfig) -> None:
    """Before anything is trained or written: two training samples go through the model and
    give one score per class, and go through it in train mode too, or one line names the
    mismatch. Leaves the model in eval mode, its batch-norm statistics as they were."""
    shape = tuple(data.input_shape)
    try:
        with torch.no_grad():
            model.eval()
            out = model(normalize(data.train.images[:2].to(device), data.mean, data.std))
    except Exception as exc:
        raise HarnessError(f"model {cfg.model} cannot take data set {cfg.dataset} (inputs of shape {shape}): "
                           f"{first_line(exc, 160)}; pick a model made for such inputs (see harness plugins)") from None
    if tuple(out.shape) != (min(2, len(data.train)), data.num_classes):
        raise HarnessError(f"model {cfg.model} gives outputs of shape {tuple(out.shape[1:])} on data set "
                           f"{cfg.dataset}, which has {data.num_classes} classes")
    try:  # and in train mode, which can run more (GoogLeNet's and Inception-v3's auxiliary classifiers)
        with untouched(model), torch.no_grad():
            model.train()
            model(normalize(data.train.images[:2].to(device), data.mean, data.std))
    except Exception as exc:
        raise HarnessError(f"model {cfg.model} cannot be trained on data set {cfg.dataset} (inputs of shape {shape}): "
                           f"{first_line(exc, 160)}; larger inputs, or the network without its training-only "
                           "branches (--traced-kwargs aux_logits=False), would do") from None


def check_criterion_supports(criterion, structures: dict, model: nn.Module, cfg: BenchConfig) -> None:
    """Before anything is trained: the criterion must be able to score every structure the
    run prunes on this model (``structures``: type -> structure; a criterion may declare
    ``supports(model, structure)``)."""
    for t, structure in structures.items():
        if not criterion.supports(model, structure):
            able = [name for name, c in sorted(registry.registry("criterion").items())
                    if not hasattr(c, "supports") or c.supports(model, structure)]
            raise HarnessError(f"criterion {cfg.criterion} cannot score the {t} units ({structure.name}) of "
                               f"{cfg.model}; valid choices: {', '.join(able) or '(none)'}")
