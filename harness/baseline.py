"""The baseline step: the unpruned model, fine-tuned from given weights or trained from
random ones, cached by content so that runs with the same settings share it."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch
from torch import nn

from harness import records
from harness.checks import check_criterion_supports, check_model_takes_data
from harness.errors import HarnessError
from harness.models import create_model, load_model, save_model
from harness.runplugins import unwrap
from harness.seeds import derive_seed
from harness.session import Session, measure_core
from harness.structure_types import structure_type, structure_types
from harness.training import train


def content_key(*parts) -> str:
    """A cache key: 16 hex digits of the SHA-256 of the parts' repr."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_digest(split) -> str:
    """SHA-256 of a split's inputs and labels (about 0.3 s for CIFAR-10's training split here)."""
    digest = hashlib.sha256()
    for t in (split.images, split.labels):
        digest.update(memoryview(t.detach().cpu().contiguous().numpy()).cast("B"))
    return digest.hexdigest()


def training_options(options: dict, keyed: set[str]) -> list:
    """The run's plugin options (``options``, by name) that change the network or its
    training (``keyed``: :meth:`harness.runplugins.RunPlugins.training_options`): the only
    ones that key a cached baseline (an evaluator's option never retrains one)."""
    return sorted((k, v) for k, v in options.items() if k in keyed)


def check_same_network(cached: nn.Module, built: nn.Module, cache: Path, options: dict) -> None:
    """The cached baseline must be the network this run's settings build: a model family
    option that changes the network but is declared ``affects_training=False`` keys no
    baseline, and reusing another network's would be silently wrong."""
    if cached.arch == built.arch:
        return
    differ = sorted(k for k in {*cached.arch, *built.arch} if cached.arch.get(k) != built.arch.get(k))
    shown = ", ".join(f"{k} {cached.arch.get(k)!r} there, {built.arch.get(k)!r} here" for k in differ[:3])
    raise HarnessError(f"the cached baseline {cache} is another network than this run's settings build ({shown}): "
                       f"an option that changes the network keys no baseline (declared affects_training=False?); "
                       f"the run's options: {', '.join(sorted(options)) or '(none)'}")


def offered_types(s: Session, model: nn.Module) -> list[str]:
    """The structure types the run's structures offer for this model, in their usual order (for
    error messages; one that cannot tell, traced-channel on a network Torch-Pruning cannot
    trace, offers none)."""
    offered = []
    for st in s.plugins.structures.values():
        try:
            if st.supports(model):
                offered.append(structure_type(st))
        except HarnessError:
            pass
    return structure_types(offered)


def check_plan(s: Session, model: nn.Module, structures: dict) -> None:
    """Before anything trains: the method prunes some of the structures asked for (layer-only
    with --structures filter ran and stopped at once: nothing left to remove), and --p-layer
    asks for no more blocks than the model has (1000 removed them all in one step); a model
    without removable blocks gets no depth candidate, whatever --p-layer says."""
    cfg = s.cfg
    asked = [t for t in cfg.structures if t in structures]
    if asked and not s.plugins.method.structures(asked):
        prunes = s.plugins.method.structures(offered_types(s, model)) or ["(none of this model's)"]
        raise HarnessError(f"method {cfg.method} prunes {', '.join(prunes)}, and --structures {','.join(asked)} "
                           f"leaves it nothing to remove; valid choices: --structures {','.join(prunes)}, or a "
                           f"--method that prunes {','.join(asked)}")
    if "layer" in structures:
        blocks = len(structures["layer"].units(model))
        if 0 < blocks < cfg.p_layer:
            raise HarnessError(f"--p-layer {cfg.p_layer}: model {cfg.model} has {blocks} removable blocks; "
                               f"give at most {blocks}")


def baseline_model(s: Session) -> tuple[nn.Module, float | None]:
    """The unpruned model after the baseline step (fine-tuning given weights, or training from
    scratch), cached so that later runs with the same settings reuse it. Also returns the
    test accuracy of the weights before that step (None when trained from scratch)."""
    cfg, data, device = s.cfg, s.data, s.device
    torch.manual_seed(derive_seed(cfg.seed, "init"))  # fresh weights (and heads) are seeded too
    model = create_model(cfg.model, data.num_classes, data.input_shape, cfg.dataset, checkpoint=cfg.checkpoint,
                         pretrained=cfg.pretrained, family=s.plugins.model).to(device)
    check_model_takes_data(model, data, device, cfg)
    structures = s.structures(model)
    missing = [t for t in cfg.structures if t not in structures]
    if missing:
        raise HarnessError(f"model {cfg.model} has no structure of type {', '.join(missing)}; "
                           f"valid choices: {', '.join(offered_types(s, model)) or '(none)'}")
    check_plan(s, model, structures)
    if hasattr(unwrap(s.plugins.criterion), "supports"):
        check_criterion_supports(s.plugins.criterion, structures, model, cfg)
    has_weights = bool(cfg.checkpoint or cfg.pretrained)
    epochs = cfg.baseline_epochs if has_weights else cfg.scratch_epochs
    recipe = dataclasses.replace(s.recipe(scratch=not has_weights), distill=0.0)  # nothing to distil from
    # keyed by content, never by where things are: other weights at the same path, or a data
    # folder whose images changed, train a baseline of their own
    key = content_key(cfg.model, cfg.dataset, split_digest(data.train), cfg.checkpoint and file_digest(cfg.checkpoint),
                      cfg.pretrained, epochs, recipe, cfg.seed,
                      training_options(cfg.options, s.plugins.training_options()))
    cache = Path(cfg.cache_dir) / "baselines" / f"{cfg.model.replace(':', '_')}-{cfg.dataset}-{key}.pt"
    before = measure_core(model, data, device, None)["accuracy"] if has_weights else None
    # runs started side by side (sweep shards) wait for one of them to train the shared
    # baseline rather than each training its own, which on a GPU would differ
    with records.file_lock(cache.with_name(cache.name + ".lock")):
        records.remove_temporaries(cache.parent, cache.name)  # a killed writer's half-written copy
        if cache.exists():
            try:
                cached = load_model(cache, device)
            except HarnessError:
                cached = None  # a broken cache entry is rebuilt
            if cached is not None:
                check_same_network(cached, model, cache, cfg.options)
                print(f"baseline: reusing {cache}")
                return cached, before
        with s.phase("baseline"):
            train(model, data, epochs, recipe=recipe, seed=derive_seed(cfg.seed, "baseline"), device=device,
                  desc="baseline", progress=s.progress)
        save_model(model, cache)
    return model, before
