"""A run's session: its configuration, its data, its devices and its own plugins, and the
services the baseline step and the loop use (training, validation, measurements)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from harness import records, registry, schema
from harness.api import EvalContext, Structure
from harness.candidate_pool import CandidatePool
from harness.checks import resolve_device
from harness.config import BUDGETS, BenchConfig
from harness.data import DataSplits
from harness.errors import HarnessError
from harness.measure import count_filters, count_flops, count_parameters
from harness.models import load_model
from harness.resolve import ResolvedRun
from harness.runplugins import RunPlugins, package_of
from harness.seeds import derive_seed, seeded_train
from harness.structure_types import choose_structures
from harness.training import Recipe, accuracy, default_batch_size, evaluate, predict, scaled_lr

# share of the steps that warm the learning rate up when SGD trains from random weights: deep
# ResNets at lr 0.1 need it (He et al. 2016). Not for AdamW: a 48-step tabular transformer run
# stayed at the majority class with it (Shuttle test accuracy 92.50% against 97.80% without).
SCRATCH_WARMUP = 0.1

VAL_SEED = 20261127  # fixed: every run of a data set holds out the same validation samples


@dataclass
class Session:
    """Everything one run needs, resolved once."""

    cfg: BenchConfig
    data: DataSplits
    device: torch.device
    run_dir: Path
    progress: bool
    # this run's own configured plugin objects: the loop reads no others
    plugins: RunPlugins | None = None
    evaluators: list = field(default_factory=list)  # the extra evaluators asked for
    # where candidates fine-tune side by side: every GPU when the run uses CUDA and has several
    devices: list = field(default_factory=list)
    pool: CandidatePool | None = None  # the Ray tasks of --parallel-candidates, started on first use
    unpruned_model: nn.Module | None = None  # iteration 0's model, read once when an evaluator asks
    deadline: float | None = None  # time.monotonic() by which the command must have stopped (--time-limit)
    phase_seconds: dict[str, float] = field(default_factory=dict)  # the current iteration's, by phase

    def unpruned(self) -> nn.Module:
        """The run's unpruned model (its record's iteration 0), loaded on first use."""
        if self.unpruned_model is None:
            self.unpruned_model = load_model(records.model_path(self.run_dir, 0), self.device)
        return self.unpruned_model

    def measure(self, model: nn.Module, what: str) -> float:
        """The model's size in one of the ``--match`` choices: FLOPs, parameters or filters."""
        if what == "flops":
            return count_flops(model, self.data.input_shape)
        if what == "params":
            return count_parameters(model)
        if what == "filters":
            return count_filters(model)
        raise ValueError(f"unknown measure {what!r}; valid choices: flops, params, filters")

    def recipe(self, scratch: bool = False) -> Recipe:
        """How this run trains: every field of the recipe that is a run setting of the same
        name comes from the run's configuration (a new training setting needs nothing here);
        fine-tuning, or (``scratch``) training from random weights, which gets its own learning
        rate, a warm-up (SGD) and no distillation."""
        c = self.cfg
        same_name = {f.name: getattr(c, f.name) for f in dataclasses.fields(Recipe) if hasattr(c, f.name)}
        return Recipe(**same_name | dict(
            lr=scaled_lr(c.scratch_lr if scratch else c.lr, c.batch_size, c.optimizer),
            distill=0.0 if scratch else c.distill, warmup=SCRATCH_WARMUP if scratch and c.optimizer == "sgd" else 0.0,
            cuda_graphs=c.cuda_graphs == "on"))  # the setting is resolved to "on" or "off"

    def finetune(self, model, epochs, tag, teacher=None, device=None):
        """Fine-tunes in place (on ``device``, default the run's), distilling from ``teacher``
        when ``--distill`` is on, under a random state seeded from the run's seed and ``tag``."""
        return seeded_train(model, self.data, epochs, recipe=self.recipe(), seed=derive_seed(self.cfg.seed, tag),
                            device=device or self.device, teacher=teacher, desc=f"fine-tune {tag}",
                            progress=self.progress)

    def validation(self, model) -> dict[str, float]:
        """Accuracy and loss on the validation split: what decisions inside the run read."""
        return evaluate(model, self.data.val, self.data, self.device)

    def finetune_all(self, models, epochs, tags, teacher=None):
        """Fine-tunes independent models, side by side on several GPUs when there are, else one
        after another; each keeps its own seed, so the result does not depend on which."""
        if self.cfg.parallel_candidates and len(models) >= 2:  # Ray tasks, one CPU slot or GPU each
            if self.pool is None:
                self.pool = CandidatePool(self.data, gpu=self.device.type == "cuda")
            trained = self.pool.finetune_all(models, epochs, self.recipe(), [derive_seed(self.cfg.seed, t) for t in tags],
                                             teacher)
            return [m.to(self.device) for m in trained]
        if len(self.devices) < 2 or len(models) < 2:
            return [self.finetune(m, epochs, tag, teacher) for m, tag in zip(models, tags)]

        def one(i):
            device = self.devices[i % len(self.devices)]
            own_teacher = copy.deepcopy(teacher).to(device) if teacher is not None else None
            trained = self.finetune(models[i].to(device), epochs, tags[i], own_teacher, device)
            return trained.to(self.device)

        with ThreadPoolExecutor(max_workers=len(self.devices)) as pool:
            return list(pool.map(one, range(len(models))))

    def features(self, model):
        return predict(model, self.data.calib, self.data, self.device, features=True)

    def structures(self, model) -> dict[str, Structure]:
        """The structure plugin of each asked-for type that supports this model (the model
        family's own package's structures win a tie: they were written for its networks)."""
        family = package_of(self.plugins.model)
        own = {st.name for st in self.plugins.structures.values() if family and package_of(st) == family}
        return choose_structures(self.plugins.structures.values(), self.cfg.structures, model,
                                 getattr(self.plugins.model, "structure_names", None) or {}, own)

    @contextlib.contextmanager
    def phase(self, name: str):
        """Times this phase into ``phase_seconds`` (waiting for the GPU at its end, so the time
        is the phase's own) and lets evaluators that measure the work itself (energy) track it."""
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            for ev in self.evaluators:
                if hasattr(ev, "track"):
                    stack.enter_context(ev.track(name))
            yield
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + time.perf_counter() - start

    def eval_context(self, iteration: int, baseline: dict | None, unpruned=None) -> EvalContext:
        return EvalContext(self.data, self.device, self.cfg.options, self.cfg.seed, self.cfg.cache_dir,
                           iteration, baseline, self.progress, unpruned)


def measure_core(model: nn.Module, data: DataSplits, device: torch.device,
                 unpruned: schema.Iteration | None) -> schema.Measurements:
    """The measurements every iteration records, taken by the core itself: test accuracy,
    FLOPs and parameters, validation accuracy and loss, and the reductions against the
    unpruned model's record (``unpruned``, None for the unpruned model itself)."""
    val = evaluate(model, data.val, data, device) if data.val is not None else None
    # harness.prune without a test loader reports on the validation split: one pass serves both
    tested = val["accuracy"] if data.test is data.val else accuracy(model, data.test, data, device)
    out = schema.Measurements(flops=count_flops(model, data.input_shape), params=count_parameters(model),
                              accuracy=round(tested, 4))
    if val is not None:
        out |= {"val_accuracy": round(val["accuracy"], 4), "val_loss": round(val["loss"], 6)}
    if unpruned:
        out["flops_reduction_pct"] = round(100 * (1 - out["flops"] / unpruned["flops"]), 4)
        out["params_reduction_pct"] = round(100 * (1 - out["params"] / unpruned["params"]), 4)
        out["accuracy_delta"] = round(out["accuracy"] - unpruned["accuracy"], 4)
    return out


def load_data(cfg: BenchConfig, dataset=None) -> DataSplits:
    """The data set's splits, with the validation split held out of its training split
    (after the calibration split, so the two are disjoint): ``--val-size`` samples, by default
    the budget's number, at most a fifth of the training split."""
    dataset = dataset or registry.get("dataset", cfg.dataset)
    data = dataset.load(cfg.data_dir, cfg.cache_dir, cfg.calib_size)
    data.test = data.test.subset(cfg.test_subset, seed=0)
    if data.val is not None:  # the data set brings its own (harness.prune's val_loader)
        return data
    held_out = cfg.val_size if cfg.val_size is not None else min(BUDGETS[cfg.budget]["val_size"], len(data.train) // 5)
    if held_out:
        if held_out > len(data.train) // 2:
            raise HarnessError(f"--val-size {held_out} would leave too little to train on: the training split "
                               f"of {cfg.dataset} has {len(data.train)} samples; give at most {len(data.train) // 2}")
        data.train, data.val = data.train.hold_out(held_out, VAL_SEED)
    return data


def check_batch_size(cfg: BenchConfig, train: int, default: int) -> None:
    """A batch larger than the training split trains on the whole split with the learning rate
    scaled for the batch asked (a batch of 99999999999 made it diverge): refused, but for the
    default batch, which a small data set simply fills."""
    if cfg.batch_size > train and cfg.batch_size != default:
        raise HarnessError(f"--batch-size {cfg.batch_size} is larger than the training split of {cfg.dataset} "
                           f"({train} samples): give at most {train}")


def open_session(run: ResolvedRun, run_dir: Path, progress: bool, deadline: float | None = None) -> Session:
    """The session of a resolved run: its data (its configuration completed with the size of
    the validation split it holds), its devices and its own plugins; ``deadline``: --time-limit's."""
    data = load_data(run.config, run.plugins.dataset)
    cfg = dataclasses.replace(run.config, val_size=len(data.val) if data.val is not None else run.config.val_size or 0)
    device = resolve_device(cfg.device)
    check_batch_size(cfg, len(data.train), default_batch_size(device))
    devices = ([torch.device("cuda", i) for i in range(torch.cuda.device_count())]
               if cfg.device in ("auto", "cuda") and device.type == "cuda" else [])
    return Session(cfg, data, device, run_dir, progress, run.plugins, list(run.plugins.evaluators.values()), devices,
                   deadline=deadline)
