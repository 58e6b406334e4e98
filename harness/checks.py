"""A run's configuration resolved and every input checked before anything loads or is
written: names, numbers, folders, the checkpoint, what the criterion can score, the model
against the data, the letters decisions are recorded with."""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING

import torch
from torch import nn

from harness import plugins, records
from harness.config import BenchConfig
from harness.errors import HarnessError, first_line
from harness.models import read_checkpoint
from harness.training import default_batch_size, normalize, resolve_precision

if TYPE_CHECKING:
    from harness.bench import Session

# tie-break order of structure types: the paper gives a tie to the layer candidate
TYPE_ORDER = ("layer", "filter", "head", "neuron")


# how decisions are recorded (iterations.jsonl "decision", decision paths like "LFF")
DECISION_LETTERS = {"layer": "L", "filter": "F", "head": "H", "neuron": "N"}


CORE_EVALUATORS = ("accuracy", "flops")  # measured on every iteration: the loop needs them


def default_cache_dir() -> str:
    return os.environ.get("HARNESS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "prunebench"))


def structure_types(names) -> list[str]:
    return sorted(set(names), key=lambda t: (TYPE_ORDER.index(t) if t in TYPE_ORDER else len(TYPE_ORDER), t))


def decision_letter(structure_type: str) -> str:
    """A built-in type's letter, else the one its structure declares (``letter``), else the
    type's first letter, upper case."""
    if structure_type in DECISION_LETTERS:
        return DECISION_LETTERS[structure_type]
    declared = [getattr(st, "letter", None) for st in plugins.registry("structure").values()
                if getattr(st, "type", st.name) == structure_type]
    return next((letter for letter in declared if letter), structure_type[0].upper())


def check_decision_letters(types) -> None:
    """Two structure types of one run must not share a letter: the decision path would lie."""
    seen: dict[str, str] = {}
    for t in types:
        letter = decision_letter(t)
        if letter in seen:
            raise HarnessError(f"structure types {seen[letter]} and {t} would both be recorded as {letter!r}; "
                               f"give the structure of type {t} a letter of its own (Structure.letter)")
        seen[letter] = t


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError("--device cuda was asked for but no CUDA device is available; valid choices here: auto, cpu")
    return torch.device(name)


def resolve(cfg: BenchConfig) -> BenchConfig:
    """Fill every default that depends on plugins, and fail on unknown names before
    anything is loaded or written."""
    cfg = cfg.resolved()
    family = plugins.get("model", cfg.model)
    if hasattr(family, "check_name"):  # a prefix family ("timm:") knows which names it can build
        family.check_name(cfg.model)
    if cfg.dataset is None:
        cfg.dataset = family.default_dataset
    for kind in ("dataset", "method", "criterion", "similarity"):
        plugins.get(kind, getattr(cfg, kind))
    cfg.evaluators = [n for n in dict.fromkeys(cfg.evaluators) if n not in CORE_EVALUATORS]
    for name in cfg.evaluators:
        plugins.get("evaluator", name)
    known_types = {getattr(st, "type", st.name) for st in plugins.registry("structure").values()}
    cfg.structures = structure_types(cfg.structures or family.default_structures)
    for t in cfg.structures:
        if t not in known_types:
            raise HarnessError(f"unknown structure type {t!r}; valid choices: {', '.join(structure_types(known_types))}")
    check_decision_letters(cfg.structures)
    declared = plugins.all_options()
    for key in cfg.options:
        if key not in declared:
            raise HarnessError(f"unknown option {key!r}; valid choices: {', '.join(sorted(declared)) or '(none)'}")
    # only the options of the plugins this run uses are its settings (and its record's)
    used = plugins.options_of(plugins.run_plugin_objects(cfg))
    given, cfg.options = cfg.options, {}
    for name in sorted(set(given) - set(used)):  # still checked: an impossible value is a mistake either way
        parse_option(declared[name], given[name])
        print(f"harness: warning: {declared[name].flag} is ignored: no plugin of this run declares it",
              file=sys.stderr, flush=True)
    for name, opt in sorted(used.items()):
        cfg.options[name] = parse_option(opt, given.get(name, opt.default))
    cfg.optimizer = cfg.optimizer or family.optimizer
    device = resolve_device(cfg.device)
    cfg.precision = resolve_precision(cfg.precision, device)
    cfg.batch_size = cfg.batch_size or default_batch_size(device)
    cfg.round_to = cfg.round_to or (8 if device.type == "cuda" else 1)
    if cfg.cuda_graphs == "on" and device.type != "cuda":
        raise HarnessError(f"--cuda-graphs on needs a CUDA device, and this run is on {device}; valid choices here: "
                           "auto, off")
    if cfg.cuda_graphs == "auto":
        cfg.cuda_graphs = "on" if device.type == "cuda" else "off"
    cfg.lr = cfg.lr or family.finetune_lr
    cfg.scratch_lr = cfg.scratch_lr or family.scratch_lr
    from_env = cfg.cache_dir is None and "HARNESS_CACHE" in os.environ
    cfg.cache_dir = cfg.cache_dir or default_cache_dir()
    # before any data loads or anything is written: the folders can take files, the weights load
    records.check_folder("--runs-dir", cfg.runs_dir)
    records.check_folder("$HARNESS_CACHE" if from_env else "--cache-dir", cfg.cache_dir)
    if cfg.checkpoint:
        read_checkpoint(cfg.checkpoint)
    if cfg.parallel_candidates:
        from harness.distributed import require_ray

        require_ray()
    return cfg


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


def check_model_takes_data(s: Session, model: nn.Module) -> None:
    """Before anything is trained or written: two training samples go through the model and
    give one score per class, or one line names the mismatch."""
    data = s.data
    shape = tuple(data.input_shape)
    try:
        with torch.no_grad():
            model.eval()
            out = model(normalize(data.train.images[:2].to(s.device), data.mean, data.std))
    except Exception as exc:
        raise HarnessError(f"model {s.cfg.model} cannot take data set {s.cfg.dataset} (inputs of shape {shape}): "
                           f"{first_line(exc, 160)}; pick a model made for such inputs (see harness plugins)") from None
    if tuple(out.shape) != (min(2, len(data.train)), data.num_classes):
        raise HarnessError(f"model {s.cfg.model} gives outputs of shape {tuple(out.shape[1:])} on data set "
                           f"{s.cfg.dataset}, which has {data.num_classes} classes")


def check_criterion_supports(s: Session, model: nn.Module) -> None:
    """Before anything is trained: the criterion must be able to score every structure the
    run prunes on this model (a criterion may declare ``supports(model, structure)``)."""
    criterion = s.plugins.criterion
    if not hasattr(plugins.unwrap(criterion), "supports"):
        return
    for t, structure in s.structures(model).items():
        if not criterion.supports(model, structure):
            able = [name for name, c in sorted(plugins.registry("criterion").items())
                    if not hasattr(c, "supports") or c.supports(model, structure)]
            raise HarnessError(f"criterion {s.cfg.criterion} cannot score the {t} units ({structure.name}) of "
                               f"{s.cfg.model}; valid choices: {', '.join(able) or '(none)'}")
