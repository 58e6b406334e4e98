"""The resolved configuration of a bench run, and the budget presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.errors import HarnessError

# Budget presets; every value can be overridden on the command line.
BUDGETS: dict[str, dict] = {
    # seconds on a laptop CPU: for tests and trying things out
    "smoke": dict(iterations=2, candidate_epochs=0.05, finetune_epochs=0.1, baseline_epochs=0.0,
                  scratch_epochs=20, train_subset=2048, calib_size=128, test_subset=1000),
    # fits a 2-core machine: minutes per iteration on CIFAR ResNet-20
    "quick": dict(iterations=5, candidate_epochs=0.5, finetune_epochs=1.0, baseline_epochs=2.0,
                  scratch_epochs=30, train_subset=10000, calib_size=256, test_subset=None),
    # the paper's setting: 10 candidate epochs on the full training split
    "paper": dict(iterations=15, candidate_epochs=10, finetune_epochs=40, baseline_epochs=10,
                  scratch_epochs=200, train_subset=None, calib_size=1024, test_subset=None),
}

MATCH_CHOICES = ("flops", "params", "filters")
SCRATCH_LR = 0.1  # training from random weights; fine-tuning uses cfg.lr


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
    budget: str = "quick"
    iterations: int | None = None
    target_flops: float | None = None  # stop once the FLOPs reduction (%) reaches this
    p_layer: int = 1
    match: str = "flops"
    epsilon: float = 0.0
    filter_step: float = 0.05  # filter-only iterations (no block left) remove this share of FLOPs
    candidate_epochs: float | None = None
    finetune_epochs: float | None = None
    baseline_epochs: float | None = None
    scratch_epochs: float | None = None
    train_subset: int | None = None
    calib_size: int | None = None
    test_subset: int | None = None
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 5e-4
    device: str = "auto"
    seed: int = 0
    runs_dir: str = "runs"
    name: str | None = None
    cache_dir: str | None = None
    extra: dict = field(default_factory=dict)

    def resolved(self) -> "BenchConfig":
        """Fill budget-dependent values from the preset and check every number."""
        if self.budget not in BUDGETS:
            raise HarnessError(f"unknown budget {self.budget!r}; valid choices: {', '.join(BUDGETS)}")
        cfg = dataclasses.replace(self)
        for key, value in BUDGETS[self.budget].items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        if cfg.match not in MATCH_CHOICES:
            raise HarnessError(f"unknown --match {cfg.match!r}; valid choices: {', '.join(MATCH_CHOICES)}")
        checks = [
            ("--iterations", cfg.iterations, cfg.iterations >= 0, "must be 0 or more"),
            ("--p-layer", cfg.p_layer, cfg.p_layer >= 1, "must be at least 1"),
            ("--target-flops", cfg.target_flops, cfg.target_flops is None or 0 < cfg.target_flops < 100,
             "must be a percentage between 0 and 100"),
            ("--filter-step", cfg.filter_step, 0 < cfg.filter_step < 1, "must be between 0 and 1"),
            ("--lr", cfg.lr, cfg.lr > 0, "must be positive"),
            ("--batch-size", cfg.batch_size, cfg.batch_size >= 1, "must be at least 1"),
            ("--calib-size", cfg.calib_size, cfg.calib_size >= 2, "must be at least 2"),
        ]
        for key in ("candidate_epochs", "finetune_epochs", "baseline_epochs", "scratch_epochs"):
            value = getattr(cfg, key)
            checks.append((f"--{key.replace('_', '-')}", value, value >= 0, "must be 0 or more"))
        for key in ("train_subset", "test_subset"):
            value = getattr(cfg, key)
            checks.append((f"--{key.replace('_', '-')}", value, value is None or value >= 1, "must be at least 1"))
        for flag, value, ok, why in checks:
            if not ok:
                raise HarnessError(f"{flag} {value} {why}")
        if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
            raise HarnessError(f"unknown --device {cfg.device!r}; valid choices: auto, cpu, cuda")
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
