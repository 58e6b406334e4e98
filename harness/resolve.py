"""One resolution step: a run's configuration as given becomes a :class:`ResolvedRun`. Every
setting is checked; the budget's, the model family's and the device's defaults are filled
in; every plugin name, structure type and plugin option is checked; and the run's own plugins
are built and configured, all before anything loads or is written. The configuration is
frozen afterwards: what a run records is what it ran with."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from harness import records, registry
from harness.checkpoints import check_finite, read_checkpoint
from harness.checks import default_cache_dir, parse_option, resolve_device
from harness.cluster import check_reachable, require_ray
from harness.config import BenchConfig
from harness.errors import HarnessError, warn
from harness.essentials import CORE_EVALUATORS
from harness.kinds import KINDS
from harness.runplugins import RunPlugins, build_run_plugins
from harness.structure_types import check_decision_letters, structure_type, structure_types
from harness.training import cpu_has_fast_bf16, default_batch_size, resolve_precision


@dataclass(frozen=True)
class ResolvedRun:
    """A run ready to start: its frozen configuration and its own configured plugins."""

    config: BenchConfig
    plugins: RunPlugins

    @classmethod
    def from_record(cls, config: BenchConfig) -> ResolvedRun:
        """A recorded run (``--resume``): nothing is decided again; its plugins are built and
        configured from the names and options its record holds."""
        plugins = build_run_plugins(config)
        plugins.configure(config.options)
        return cls(config, plugins)


def resolve(cfg: BenchConfig) -> ResolvedRun:
    """The run ``cfg`` describes, resolved (see above); one line names the first problem."""
    cfg = cfg.checked()
    family = registry.get("model", cfg.model)
    if cfg.model.endswith(":"):  # a prefix alone: every family that answers for its names is a choice
        answering = [f for key, f in registry.registry("model").items()
                     if key == cfg.model or cfg.model in getattr(f, "fallback_for", ())]
        raise HarnessError(f"--model {cfg.model} names no network after the prefix; valid choices: {cfg.model}<name>, "
                           + "; ".join(f.description.split(";")[0] for f in answering))
    if hasattr(family, "check_name"):  # a prefix family ("timm:") knows which names it can build
        family.check_name(cfg.model)
    cfg = dataclasses.replace(cfg, dataset=cfg.dataset or family.default_dataset,
                              criterion=cfg.criterion or getattr(family, "default_criterion", "kl"),
                              evaluators=[n for n in dict.fromkeys(cfg.evaluators) if n not in CORE_EVALUATORS],
                              structures=structure_types(cfg.structures or family.default_structures))
    for kind in KINDS:  # every plugin the settings name (the model's was found above)
        if kind.setting and kind.setting != "model":
            value = getattr(cfg, kind.setting)
            for name in [value] if isinstance(value, str) else value:
                registry.get(kind.name, name)
    structures = registry.registry("structure").values()
    known_types = {structure_type(st) for st in structures}
    for t in cfg.structures:
        if t not in known_types:
            raise HarnessError(f"unknown structure type {t!r}; valid choices: {', '.join(structure_types(known_types))}")
    check_decision_letters(cfg.structures, structures)
    plugins = build_run_plugins(cfg)
    options = run_options(cfg.options, plugins)
    device = resolve_device(cfg.device)
    if cfg.cuda_graphs == "on" and device.type != "cuda":
        raise HarnessError(f"--cuda-graphs on needs a CUDA device, and this run is on {device}; valid choices here: "
                           "auto, off")
    if cfg.precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        warn("--precision bf16 on a CPU without native bf16 (AVX512-BF16 or AMX) is emulated, slower than fp32; "
             "--precision auto chooses fp32 here")
    from_env = cfg.cache_dir is None and "HARNESS_CACHE" in os.environ
    cfg = dataclasses.replace(
        cfg, options=options, optimizer=cfg.optimizer or family.optimizer,
        precision=resolve_precision(cfg.precision, device), batch_size=cfg.batch_size or default_batch_size(device),
        round_to=cfg.round_to or (8 if device.type == "cuda" else 1), lr=cfg.lr or family.finetune_lr,
        cuda_graphs=("on" if device.type == "cuda" else "off") if cfg.cuda_graphs == "auto" else cfg.cuda_graphs,
        scratch_lr=cfg.scratch_lr or family.scratch_lr, cache_dir=cfg.cache_dir or default_cache_dir())
    # before any data loads or anything is written: the folders can take files, the weights load
    records.check_folder("--runs-dir", cfg.runs_dir)
    records.check_folder("$HARNESS_CACHE" if from_env else "--cache-dir", cfg.cache_dir)
    if cfg.checkpoint:
        check_finite(read_checkpoint(cfg.checkpoint), cfg.checkpoint)
    if cfg.parallel_candidates:
        require_ray()
        check_reachable(None)  # RAY_ADDRESS's cluster, before anything is written
    plugins.configure(cfg.options)
    return ResolvedRun(cfg, plugins)


def run_options(given: dict, plugins: RunPlugins) -> dict:
    """The run's plugin options, parsed and checked: every option its plugins declare, given or
    by default. Only those are the run's settings (and its record's); one that another plugin
    declares is checked too (an impossible value is a mistake either way) and ignored with a
    warning; one that no plugin declares is an error."""
    declared = registry.all_options()
    for key in given:
        if key not in declared:
            raise HarnessError(f"unknown option {key!r}; valid choices: {', '.join(sorted(declared)) or '(none)'}")
    used = plugins.options()
    for name in sorted(set(given) - set(used)):
        parse_option(declared[name], given[name])
        warn(f"{declared[name].flag} is ignored: no plugin of this run declares it")
    return {name: parse_option(opt, given.get(name, opt.default)) for name, opt in sorted(used.items())}
