"""Every core setting of a bench run, declared once (after pytest's option declarations):
name, type, default, help, check and the value runs recorded before it existed had. The
options of `harness bench`, the fields of :class:`harness.config.BenchConfig`, the reading of
config-file values and of older records, and the checks of a resolved run all come from
:data:`RUN_SETTINGS`: a new setting is a row here and the code that reads it (a training
setting whose name is a field of harness.train_step.Recipe reaches the engine by that name)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

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

PRECISION_CHOICES = ("auto", "fp32", "bf16")
DEVICES = "auto, cpu, cuda or cuda:N"
TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool", list: "list[str]"}


@dataclass(frozen=True)
class Check:
    """A condition on a setting's value; ``message``, formatted with the option's ``flag``
    and the ``value``, is the error when it does not hold."""

    holds: Callable[[object], bool]
    message: str


def must(holds: Callable[[object], bool], why: str) -> Check:
    """The usual check, whose error reads ``--flag VALUE why``."""
    return Check(holds, "{flag} {value} " + why)


def at_least(least: int) -> Check:
    """A count of at least ``least``."""
    return must(lambda v: v >= least, f"must be at least {least}")


ZERO_OR_MORE = must(lambda v: v >= 0, "must be 0 or more")
POSITIVE = must(lambda v: v > 0, "must be positive")


NOT_RECORDED = object()  # a setting every record has


@dataclass(frozen=True)
class Setting:
    """One setting: ``--flag`` on the command line, a key of config files (``flag_name`` or
    ``flag-name``) and a field of BenchConfig. A ``default`` of None is decided when the run
    is resolved (from the budget, the model family or the device) or means "off"; ``help``
    says which (a budget's values are added to it by :meth:`help_text`)."""

    name: str
    type: type  # str, int, float, bool, or list: of names, comma-separated on the command line
    default: object = None
    help: str | None = None
    choices: tuple[str, ...] | None = None
    check: Check | None = None
    path: bool = False  # names a file or folder (PATH in --help)
    # the value of runs recorded before the setting existed (their records lack it), when it
    # differs from the default: a resumed old run goes on as it was started
    old_records: object = NOT_RECORDED

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def annotation(self) -> str:
        """The type of its BenchConfig field."""
        return TYPE_NAMES[self.type] + (" | None" if self.default is None else "")

    def help_text(self) -> str | None:
        """The help, with the budgets' values when the budget decides the default."""
        if self.name not in BUDGETS["quick"]:
            return self.help
        values = "/".join("all" if b[self.name] is None else f"{b[self.name]:g}" for b in BUDGETS.values())
        return f"{self.help} [default: the budget's, {values} for {'/'.join(BUDGETS)}]"

    def check_type(self, value) -> None:
        """Values from config files and sweeps arrive untyped: a wrong type is a one-line error."""
        if value is None:
            return
        kinds = {int: (int,), float: (int, float), bool: (bool,), str: (str,), list: (list, tuple)}
        ok = isinstance(value, kinds[self.type]) and not (self.type in (int, float) and isinstance(value, bool))
        if self.type is list:
            ok = ok and all(isinstance(v, str) for v in value)
        if not ok:
            raise HarnessError(f"{self.flag} {value!r} must be of type {TYPE_NAMES[self.type]}")

    def from_file(self, value, source: str):
        """A config file's value, checked and converted as the same option on the command
        line would be (a list setting becomes comma-separated text, as typed there)."""
        where = f"{self.flag} {value!r} in {source}"
        if self.path:
            if not isinstance(value, str):
                raise HarnessError(f"{where}: must be a path")
            return value
        if self.type is bool:
            if not isinstance(value, bool):
                raise HarnessError(f"{where}: must be true or false")
            return value
        if self.type in (int, float):
            # a file's value must be what it says: 2.5 is no count and true is no number
            if isinstance(value, bool) or not isinstance(value, int if self.type is int else (int, float)):
                raise HarnessError(f"{where}: must be {'a whole number' if self.type is int else 'a number'}")
            return self.type(value)
        text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        if self.choices is not None and text not in self.choices:
            raise HarnessError(f"{where}: {text!r} is not one of {', '.join(map(repr, self.choices))}.")
        return text

    def check_value(self, value) -> None:
        """A one-line error unless the (typed) value is possible; None always is."""
        if value is None:
            return
        if isinstance(value, float) and not math.isfinite(value):  # no setting (and no valid JSON)
            raise HarnessError(f"{self.flag} {value} must be a finite number")
        if self.choices is not None and value not in self.choices:
            raise HarnessError(f"unknown {self.flag} {value!r}; valid choices: {', '.join(self.choices)}")
        if self.check is not None and not self.check.holds(value):
            raise HarnessError(self.check.message.format(flag=self.flag, value=value))


def _is_device(value: str) -> bool:
    return value in ("auto", "cpu", "cuda") or value.startswith("cuda:")


def _is_folder_name(value: str) -> bool:
    return bool(value) and not value.startswith(".") and "/" not in value and "\\" not in value


#: the settings of one run, in the order of `harness bench --help` and of BenchConfig's fields
RUN_SETTINGS: tuple[Setting, ...] = (
    Setting("model", str, "tiny-resnet", "Model name (see `harness plugins`; timm:<name> and torchvision:<name> too)."),
    Setting("dataset", str, None, "Data set name; default: the model's own (cifar10 for CIFAR ResNets)."),
    Setting("data_dir", str, None, "Data location, e.g. an image-folder tree with train/ and test/.", path=True),
    Setting("checkpoint", str, None, "State dict to start from (weights only).", path=True),
    Setting("pretrained", bool, False, "Start from the published weights (local cache first, then download)."),
    Setting("method", str, "cka", "Pruning method."),
    Setting("criterion", str, None,
            "Importance criterion; default: the model family's: kl, but l1 for traced networks (torchvision:<name> "
            "and timm:<name> other than ResNets and ViTs), where kl would run one forward pass per channel."),
    Setting("similarity", str, "cka", "Similarity metric."),
    Setting("structures", list, None,
            "Structure types to prune, comma-separated (layer, filter, head, neuron); default: the model's."),
    Setting("budget", str, "quick", "Preset for epochs and subset sizes; each value can be overridden.",
            choices=tuple(BUDGETS)),
    Setting("iterations", int, None, "Pruning iterations (K).", check=ZERO_OR_MORE),
    Setting("target_flops", float, None, "Stop once FLOPs are reduced by this many percent.",
            check=must(lambda v: 0 < v < 100, "must be a percentage between 0 and 100")),
    Setting("stop_on_drop", float, None,
            "Stop once validation accuracy falls more than this many points below the unpruned model's, keeping "
            "the last model within tolerance (the paper's Table III protocol, decided on held-out training data: "
            "the test split is only reported).",
            check=must(lambda v: v >= 0, "must be 0 or more accuracy points")),
    Setting("p_layer", int, 1, "Blocks removed by the layer candidate.", check=at_least(1)),
    Setting("match", str, "flops", "What the other candidates match of the layer candidate's reduction.",
            choices=("flops", "params", "filters")),
    Setting("epsilon", float, 0.0, "Added to the similarity of every candidate but the layer one."),
    Setting("filter_step", float, 0.05, "Share of the model a width candidate removes once no block is left.",
            check=must(lambda v: 0 < v < 1, "must be between 0 and 1")),
    Setting("round_to", int, None,
            "Width candidates keep a multiple of this many channels (heads, neurons) in every layer they "
            "touch, taking each layer down to its next multiple as Torch-Pruning rounds (a layer narrower than it "
            "goes one unit at a time); default: 8 on CUDA (tensor cores want multiples of 8), 1 on the CPU (see the README).",
            check=at_least(1), old_records=1),
    Setting("candidate_epochs", float, None, "Fine-tuning epochs of each candidate.", check=ZERO_OR_MORE),
    Setting("finetune_epochs", float, None, "Fine-tuning epochs of the kept candidate.", check=ZERO_OR_MORE),
    Setting("baseline_epochs", float, None, "Fine-tuning epochs of given weights before pruning.", check=ZERO_OR_MORE),
    Setting("scratch_epochs", float, None, "Training epochs when no weights are given.", check=ZERO_OR_MORE),
    Setting("train_subset", int, None, "Training samples per epoch.", check=at_least(1)),
    Setting("calib_size", int, None, "Calibration samples held out of the training split.", check=at_least(2)),
    Setting("test_subset", int, None, "Evaluate on this many test samples (fixed subset).", check=at_least(1)),
    # None: the budget's, at most a fifth of the training split (set when the data loads);
    # 0 only in records from before it existed: none
    Setting("val_size", int, None,
            "Validation samples held out of the training split (disjoint from the calibration split) for every "
            "decision inside a run (by default at most a fifth of the training split).", check=at_least(1),
            old_records=0),
    Setting("oracle_epochs", float, 0.0,
            "Check every decision: fine-tune each candidate this many epochs more (at least --finetune-epochs, "
            "the kept model's horizon) with --oracle-seeds seeds and record its validation and test accuracy; the "
            "verdict reads the test split, which no decision inside the run reads (see `harness decisions`); "
            "0 = off. The run itself goes on exactly as without it.",
            check=ZERO_OR_MORE),
    Setting("oracle_seeds", int, 2, "Seeds of the oracle's fine-tunes (--oracle-epochs).", check=at_least(2)),
    Setting("record_decisions", bool, True,
            "Fine-tune and describe every candidate of every iteration (every similarity metric, validation "
            "accuracy and loss), also those a method would not look at.", old_records=False),
    Setting("parallel_candidates", bool, False,
            "Fine-tune an iteration's candidates as concurrent Ray tasks (one CPU slot, or one GPU, each; "
            "RAY_ADDRESS or a local instance); the result is the sequential one. Needs pip install "
            "'prunebench[ray]'."),
    Setting("optimizer", str, None,
            "Optimizer; default: the model family's (SGD for ResNets, AdamW for transformers).",
            choices=("sgd", "adamw")),
    Setting("lr", float, None, "Fine-tuning learning rate; default: the model family's.", check=POSITIVE),
    Setting("scratch_lr", float, None, "Learning rate when training from scratch; default: the model family's.",
            check=POSITIVE),
    Setting("batch_size", int, None,
            "Training batch size [default: 128 on a CPU, 512 on a GPU]; learning rates are given for 128 and "
            "scaled with it (linearly for SGD, by the square root for AdamW).", check=at_least(1),
            old_records=128),
    Setting("weight_decay", float, 5e-4, "Weight decay of the optimizer when training.", check=ZERO_OR_MORE),
    Setting("precision", str, "auto",
            "Training arithmetic: auto = bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX), "
            "else fp32. Evaluation is always fp32.", choices=PRECISION_CHOICES, old_records="fp32"),
    Setting("cuda_graphs", str, "auto",
            "Capture each fine-tune's training step as one CUDA graph and replay it (the step's few hundred "
            "small kernels become one launch; eager with one warning if capture fails): auto = on with CUDA, off "
            "on a CPU; on needs a CUDA device.", choices=("auto", "on", "off"), old_records="off"),
    Setting("distill", float, 0.5,
            "Weight (0-1) of distillation from the parent when fine-tuning candidates and the kept model: KL "
            "between softened outputs on the same batch; 0 = off.",
            check=must(lambda v: 0 <= v <= 1, "must be between 0 and 1"), old_records=0.0),
    Setting("distill_temperature", float, 4.0, "Softmax temperature of --distill.", check=POSITIVE),
    Setting("label_smoothing", float, 0.0, "Label smoothing of the cross-entropy when training.",
            check=must(lambda v: 0 <= v < 1, "must be in [0, 1)")),
    Setting("evaluators", list, (),
            "Extra evaluators, comma-separated (see `harness plugins`); accuracy and flops are always measured."),
    Setting("evaluate", str, "every", "Run the extra evaluators after every iteration or on the final model only.",
            choices=("every", "final")),
    Setting("device", str, "auto", DEVICES + ".",
            check=Check(_is_device, "unknown {flag} {value!r}; valid choices: " + DEVICES)),
    Setting("seed", int, 0, "Seed of the run's randomness (data order, fresh weights, the random-walk "
            "method); the same seed and settings reproduce a run."),
    Setting("runs_dir", str, "runs", "Where run records go.", path=True),
    Setting("cache_dir", str, None, "Cache for data and baselines (default: $HARNESS_CACHE or ~/.cache/prunebench).",
            path=True),
    Setting("name", str, None, "Run directory name (default: from the settings and the time).",
            check=Check(_is_folder_name, "{flag} {value!r} must be a plain folder name (no '/', no leading '.'): "
                                         "runs are written under --runs-dir")),
)

#: how many runs `harness bench` makes: an option of the command, not of a run
SEEDS = Setting("seeds", int, 1, "Run this many seeds (seed, seed+1, ...), one run each; tables show mean and std.",
                check=at_least(1))

#: when the command stops: not a setting of the runs, so a resumed run may be given another
TIME_LIMIT = Setting("time_limit", float, None,
                     "Stop cleanly, before an iteration that would end after this many minutes from the command's "
                     "start (judged by the run's last iteration), with exit status 5; `harness bench --resume` continues "
                     "a run identically, running `harness sweep` again continues a sweep. For GPU jobs with a time "
                     "limit.", check=POSITIVE)

#: every setting `harness bench` takes from its command line or config file, by name
BENCH_SETTINGS: dict[str, Setting] = {s.name: s for s in (*RUN_SETTINGS, SEEDS, TIME_LIMIT)}


def with_run_settings(cls):
    """``cls`` as a dataclass whose fields are the run settings, with their defaults, followed
    by its own fields."""
    own = dict(cls.__dict__.get("__annotations__", {}))
    cls.__annotations__ = {s.name: s.annotation for s in RUN_SETTINGS} | own
    for s in RUN_SETTINGS:
        if s.type is list and s.default is not None:  # every instance gets its own list
            setattr(cls, s.name, dataclasses.field(default_factory=lambda d=s.default: list(d)))
        else:
            setattr(cls, s.name, s.default)
    return dataclass(cls, frozen=True)
