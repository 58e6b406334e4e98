"""The resolved configuration of a bench run, and the budget presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from harness.errors import HarnessError

# Budget presets; every value can be overridden on the command line or in a config file.
BUDGETS: dict[str, dict] = {
    # seconds on a laptop CPU for small models: for tests and trying things out (ResNet-110
    # from random weights: 7m44s for 2 iterations on a 2-core CPU, mostly the KL criterion)
    "smoke": dict(iterations=2, candidate_epochs=0.05, finetune_epochs=0.1, baseline_epochs=0.0,
                  scratch_epochs=20, train_subset=2048, calib_size=128, test_subset=1000, val_size=256),
    # fits a 2-core machine: 33-35 s per iteration of pretrained CIFAR ResNet-20 on an idle
    # 2-core CPU with the training engine (bf16) and --distill 0.5 (38-40 s before the engine)
    "quick": dict(iterations=5, candidate_epochs=0.5, finetune_epochs=1.0, baseline_epochs=2.0,
                  scratch_epochs=30, train_subset=10000, calib_size=256, test_subset=None, val_size=2000),
    # the paper's setting: 10 candidate epochs on the full training split
    "paper": dict(iterations=15, candidate_epochs=10, finetune_epochs=40, baseline_epochs=10,
                  scratch_epochs=200, train_subset=None, calib_size=1024, test_subset=None, val_size=5000),
}

MATCH_CHOICES = ("flops", "params", "filters")
EVALUATE_CHOICES = ("every", "final")
OPTIMIZER_CHOICES = ("sgd", "adamw")
PRECISION_CHOICES = ("auto", "fp32", "bf16")
DEVICE_HELP = "auto, cpu, cuda or cuda:N"


@dataclass
class BenchConfig:
    model: str = "tiny-resnet"
    dataset: str | None = None  # None: the model's default data set
    data_dir: str | None = None
    checkpoint: str | None = None
    pretrained: bool = False
    method: str = "cka"
    criterion: str = "kl"
    similarity: str = "cka"
    structures: list[str] | None = None  # None: the model family's default structure types
    budget: str = "quick"
    iterations: int | None = None
    target_flops: float | None = None  # stop once the FLOPs reduction (%) reaches this
    stop_on_drop: float | None = None  # stop once accuracy falls more than this many points
    p_layer: int = 1
    match: str = "flops"
    epsilon: float = 0.0
    filter_step: float = 0.05  # width-only iterations (no block left) remove this share
    candidate_epochs: float | None = None
    finetune_epochs: float | None = None
    baseline_epochs: float | None = None
    scratch_epochs: float | None = None
    train_subset: int | None = None
    calib_size: int | None = None
    test_subset: int | None = None
    # held out of the training split for the decisions inside a run; None: the budget's,
    # at most a fifth of the training split; 0 (records from before it existed): none
    val_size: int | None = None
    oracle_epochs: float = 0.0  # > 0: every decision is checked by fine-tuning each candidate longer
    record_decisions: bool = True  # fine-tune and describe every candidate, not only the method's
    parallel_candidates: bool = False  # candidates fine-tune as concurrent Ray tasks (same result)
    optimizer: str | None = None  # None: the model family's
    lr: float | None = None  # fine-tuning; None: the model family's
    scratch_lr: float | None = None  # training from random weights; None: the model family's
    batch_size: int | None = None  # None: the device's (harness.training.default_batch_size)
    weight_decay: float = 5e-4
    precision: str = "auto"  # auto, fp32 or bf16 (autocast); stored resolved
    distill: float = 0.5  # weight of distillation from the parent when fine-tuning (0: off)
    distill_temperature: float = 4.0
    label_smoothing: float = 0.0
    evaluators: list[str] = field(default_factory=list)  # besides accuracy and flops, always measured
    evaluate: str = "every"
    device: str = "auto"
    seed: int = 0
    runs_dir: str = "runs"
    name: str | None = None
    cache_dir: str | None = None
    options: dict = field(default_factory=dict)  # plugin options (harness.api.Option), by name

    def resolved(self) -> "BenchConfig":
        """Fill budget-dependent values from the preset and check every number."""
        if self.budget not in BUDGETS:
            raise HarnessError(f"unknown budget {self.budget!r}; valid choices: {', '.join(BUDGETS)}")
        self._check_types()
        cfg = dataclasses.replace(self, options=dict(self.options), evaluators=list(self.evaluators))
        for key, value in BUDGETS[self.budget].items():
            # the validation split's default depends on the data set's size: set when it loads
            if getattr(cfg, key) is None and key != "val_size":
                setattr(cfg, key, value)
        for key, choices in (("match", MATCH_CHOICES), ("evaluate", EVALUATE_CHOICES)):
            if getattr(cfg, key) not in choices:
                raise HarnessError(f"unknown --{key} {getattr(cfg, key)!r}; valid choices: {', '.join(choices)}")
        if cfg.precision not in PRECISION_CHOICES:
            raise HarnessError(f"unknown --precision {cfg.precision!r}; valid choices: {', '.join(PRECISION_CHOICES)}")
        if cfg.optimizer is not None and cfg.optimizer not in OPTIMIZER_CHOICES:
            raise HarnessError(f"unknown --optimizer {cfg.optimizer!r}; valid choices: {', '.join(OPTIMIZER_CHOICES)}")
        checks = [
            ("--iterations", cfg.iterations, cfg.iterations >= 0, "must be 0 or more"),
            ("--p-layer", cfg.p_layer, cfg.p_layer >= 1, "must be at least 1"),
            ("--target-flops", cfg.target_flops, cfg.target_flops is None or 0 < cfg.target_flops < 100,
             "must be a percentage between 0 and 100"),
            ("--stop-on-drop", cfg.stop_on_drop, cfg.stop_on_drop is None or cfg.stop_on_drop >= 0,
             "must be 0 or more accuracy points"),
            ("--filter-step", cfg.filter_step, 0 < cfg.filter_step < 1, "must be between 0 and 1"),
            ("--batch-size", cfg.batch_size, cfg.batch_size is None or cfg.batch_size >= 1, "must be at least 1"),
            ("--distill", cfg.distill, 0 <= cfg.distill <= 1, "must be between 0 and 1"),
            ("--distill-temperature", cfg.distill_temperature, cfg.distill_temperature > 0, "must be positive"),
            ("--label-smoothing", cfg.label_smoothing, 0 <= cfg.label_smoothing < 1, "must be in [0, 1)"),
            ("--calib-size", cfg.calib_size, cfg.calib_size >= 2, "must be at least 2"),
            ("--weight-decay", cfg.weight_decay, cfg.weight_decay >= 0, "must be 0 or more"),
        ]
        for key in ("lr", "scratch_lr"):
            value = getattr(cfg, key)
            checks.append((f"--{key.replace('_', '-')}", value, value is None or value > 0, "must be positive"))
        for key in ("candidate_epochs", "finetune_epochs", "baseline_epochs", "scratch_epochs"):
            value = getattr(cfg, key)
            checks.append((f"--{key.replace('_', '-')}", value, value >= 0, "must be 0 or more"))
        checks.append(("--oracle-epochs", cfg.oracle_epochs, cfg.oracle_epochs >= 0, "must be 0 or more"))
        checks.append(("--val-size", cfg.val_size, cfg.val_size is None or cfg.val_size >= 1, "must be at least 1"))
        if cfg.oracle_epochs > 0 and not cfg.record_decisions:
            raise HarnessError("--oracle-epochs needs the decision records; drop --no-record-decisions")
        for key in ("train_subset", "test_subset"):
            value = getattr(cfg, key)
            checks.append((f"--{key.replace('_', '-')}", value, value is None or value >= 1, "must be at least 1"))
        for f in dataclasses.fields(cfg):  # NaN and infinity are no settings (and no valid JSON)
            value = getattr(cfg, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise HarnessError(f"--{f.name.replace('_', '-')} {value} must be a finite number")
        for flag, value, ok, why in checks:
            if not ok:
                raise HarnessError(f"{flag} {value} {why}")
        if cfg.name is not None and (not cfg.name or cfg.name in (".", "..") or "/" in cfg.name or "\\" in cfg.name
                                     or cfg.name.startswith(".")):
            raise HarnessError(f"--name {cfg.name!r} must be a plain folder name (no '/', no leading '.'): "
                               "runs are written under --runs-dir")
        if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
            raise HarnessError(f"unknown --device {cfg.device!r}; valid choices: {DEVICE_HELP}")
        return cfg

    def _check_types(self) -> None:
        """Values from config files arrive untyped: a wrong type is a one-line error."""
        kinds = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "list[str]": (list, tuple)}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            wanted = str(f.type).replace(" | None", "")
            if value is None or wanted not in kinds:
                continue
            ok = isinstance(value, kinds[wanted]) and not (wanted in ("int", "float") and isinstance(value, bool))
            if wanted == "list[str]":
                ok = ok and all(isinstance(v, str) for v in value)
            if not ok:
                raise HarnessError(f"--{f.name.replace('_', '-')} {value!r} must be of type {wanted}")

    def copy_for_seed(self, seed: int, suffix: bool) -> "BenchConfig":
        """The same run with another seed; with ``suffix``, a given name gets ``-s<seed>``."""
        name = f"{self.name}-s{seed}" if suffix and self.name else self.name
        return dataclasses.replace(self, seed=seed, name=name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchConfig":
        """From a stored config; keys of older record versions are mapped or dropped."""
        d = dict(d)
        if "extra" in d and "options" not in d:  # schema 1
            d["options"] = d.pop("extra")
        # records from before the training engine trained in fp32 at batch 128
        d.setdefault("precision", "fp32")
        d.setdefault("batch_size", 128)
        d.setdefault("distill", 0.0)
        # records from before the validation split decided on the test split and described
        # only the method's own candidates
        d.setdefault("val_size", 0)
        d.setdefault("record_decisions", False)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
