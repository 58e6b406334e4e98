"""The training engine: training, fine-tuning and evaluation on in-memory tensor splits,
used for the baseline step, every candidate, the kept model and evaluation.

What makes it fast (measured by benchmarks/train_throughput.py against the plain loop it
replaced):
- the training split lives on the run's device, copied once; each epoch's sample order,
  crop offsets and flips are drawn on the host in one go and moved over once, so a step
  never waits for the host;
- bf16 autocast where the hardware has fast bf16 (CUDA; CPUs with AVX512-BF16 or AMX),
  with the parameters, the optimizer and batch-norm statistics in fp32;
- channels_last memory layout for convolutional networks, and cudnn.benchmark on CUDA;
- on CUDA (``--cuda-graphs``), the whole step captured once per fine-tune as a CUDA graph
  and replayed (:class:`harness.train_step.TrainStep`): one launch instead of a few hundred
  small kernels.
Evaluation (accuracy, features) runs in fp32, so reported numbers do not depend on the
precision chosen for speed.
"""

from __future__ import annotations

import functools
import math
import os
import time
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness import train_step
from harness.data import DataSplits, TensorSplit
from harness.deprecation import moved_names
from harness.errors import HarnessError
from harness.measure import evaluating
from harness.progress import progress as progress_bar
from harness.settings import PRECISION_CHOICES  # noqa: F401 - re-exported for the benchmarks
from harness.train_step import MIN_CAPTURED_STEPS, Recipe, TrainStep, mean_std

#: the batch size the learning rates of the model families are given for
REFERENCE_BATCH = 128

__getattr__ = moved_names(__name__, {
    "crop_flip": (train_step.crop_flip, "harness.train_step.crop_flip"),
    "distillation_loss": (train_step.distillation_loss, "harness.train_step.distillation_loss"),
    "WARMUP_STEPS": (train_step.WARMUP_STEPS, "harness.train_step.WARMUP_STEPS"),
})


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Per channel for images (N, C, H, W), per feature for rows (N, F)."""
    m, s = mean_std(mean, std, x)
    return (x - m) / s


# ---------------------------------------------------------------- hardware choices
# The widest instruction set a CPU computes with, narrowest first: each computes all before it.
# ATen's vectorised kernels, oneDNN's (convolutions) and MKL's (matrix products) pick their
# kernels by it, so the same fp32 training gives other bits under another one.
CPU_ISAS = ("DEFAULT", "AVX2", "AVX512", "AVX512-BF16", "AMX")
_ONEDNN_ISA = {"DEFAULT": "SSE41", "AVX2": "AVX2", "AVX512": "AVX512_CORE", "AVX512-BF16": "AVX512_CORE_BF16",
               "AMX": "AVX512_CORE_AMX"}


def isa_caps(isa: str) -> dict[str, str]:
    """The environment that makes a process started with it compute as on a CPU whose widest
    instruction set is ``isa`` (one of CPU_ISAS), on a CPU with that one or a wider one."""
    wide = CPU_ISAS.index(isa) >= CPU_ISAS.index("AVX512")
    return {"ATEN_CPU_CAPABILITY": "avx512" if wide else isa.lower(), "ONEDNN_MAX_CPU_ISA": _ONEDNN_ISA[isa],
            "MKL_ENABLE_INSTRUCTIONS": {"DEFAULT": "SSE4_2", "AVX2": "AVX2"}.get(isa, "AVX512")}


@functools.lru_cache(maxsize=None)
def cpu_isa(capped: bool = True) -> str:
    """This CPU's widest instruction set (one of CPU_ISAS), from its flags; ``capped``: as this
    process computes, lowered by the variables of isa_caps where they are set."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        flags = set()
    # the flag that marks each set after DEFAULT; a CPU with one has the ones before it
    level = max((i for i, flag in enumerate(("avx2", "avx512f", "avx512_bf16", "amx_bf16"), 1) if flag in flags),
                default=0)
    if capped:
        onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
        # widest first, so that AVX512_CORE_BF16 is not read as AVX512_CORE; AVX is below AVX2
        cap = 0 if onednn == "AVX" else next((i for i in reversed(range(len(CPU_ISAS)))
                                              if onednn.startswith(_ONEDNN_ISA[CPU_ISAS[i]])), level)
        level = min(level, cap)
        aten = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
        level = min(level, {"default": 0, "avx2": 1}.get(aten, level))
    return CPU_ISAS[level]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is
    emulated and slower than fp32."""
    return CPU_ISAS.index(cpu_isa()) >= CPU_ISAS.index("AVX512-BF16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 where benchmarks/train_throughput.py measured it faster (CUDA with bf16
    support; a CPU with native bf16: 1.9x on ResNet-20 here), fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def default_batch_size(device: torch.device) -> int:
    """128 on a CPU (larger batches are not faster there); 512 on a GPU, which 128 leaves idle."""
    return 512 if device.type == "cuda" else REFERENCE_BATCH


def scaled_lr(lr: float, batch_size: int, optimizer: str) -> float:
    """Learning rates are given for a batch of 128 and scaled with the batch size: linearly
    for SGD (Goyal et al. 2017), by the square root for AdamW (Malladi et al. 2022)."""
    ratio = batch_size / REFERENCE_BATCH
    return lr * (math.sqrt(ratio) if optimizer == "adamw" else ratio)


_DEVICE_COPIES: dict[int, dict[str, TensorSplit]] = {}  # id(split) -> device -> copy


def _device_copy(split: TensorSplit, device: torch.device) -> TensorSplit:
    """The split on ``device``, copied once per split and device (the copy lives as long
    as the split)."""
    if device.type == "cpu":
        return split
    copies = _DEVICE_COPIES.setdefault(id(split), {})
    if not copies:
        weakref.finalize(split, _DEVICE_COPIES.pop, id(split), None)
    key = str(device)
    if key not in copies:
        copies[key] = TensorSplit(split.images.to(device), split.labels.to(device))
    return copies[key]


def _epoch_plan(n: int, batch_size: int, pad: int, augment: bool, g: torch.Generator, device: torch.device):
    """One pass over a fresh seeded permutation of the split: sample indices, and for
    CIFAR augmentation the crop offsets and flips of every sample, on the device."""
    order = torch.randperm(n, generator=g)
    steps = max(1, n // batch_size)  # full batches only, as the loop it replaced
    order = order[: steps * batch_size]
    plan = {"order": order}
    if augment:
        plan["oy"] = torch.randint(0, 2 * pad + 1, (len(order),), generator=g)
        plan["ox"] = torch.randint(0, 2 * pad + 1, (len(order),), generator=g)
        plan["flip"] = torch.rand(len(order), generator=g) < 0.5
    return {k: v.to(device, non_blocking=True) for k, v in plan.items()}


def _uses_channels_last(model: nn.Module, x: torch.Tensor) -> bool:
    """channels_last pays for convolutional networks on 4-d inputs (1.2x measured on CPU)."""
    return x.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in model.modules())


def lr_factor(steps: int, warmup: float):
    """The learning rate's factor at each step: cosine over the steps, after a linear warm-up
    over the first ``warmup`` share of them (He et al. 2016 needed one to train ResNet-110
    from random weights)."""
    warm = int(round(warmup * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return factor


@dataclass(frozen=True)
class TrainProgress:
    """Where a training paused at an epoch boundary stands: with the model's weights, what
    :func:`train` needs to continue it exactly (``resume=``)."""

    step: int  # steps done
    generator: torch.Tensor  # the state of the generator that draws each epoch's plan
    optimizer: dict  # the optimizer's state_dict

    def to_dict(self) -> dict:
        return {"step": self.step, "generator": self.generator, "optimizer": self.optimizer}


class TrainingPaused(Exception):
    """:func:`train` stopped at an epoch boundary because its ``deadline`` would pass during the
    next epoch; ``progress`` continues it. The model holds the weights reached."""

    def __init__(self, progress: TrainProgress, steps: int):
        super().__init__(f"paused after {progress.step} of {steps} steps")
        self.progress, self.steps = progress, steps


def _check_finite(model: nn.Module, loss: torch.Tensor, desc: str, steps: int, lr: float, bs: int) -> None:
    """A training that diverged (its last loss, or a weight or statistic after the last step,
    NaN or infinite) stops here in one line: nothing is decided on NaN."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    finite = torch.stack([torch.isfinite(loss.detach()).all(), *(torch.isfinite(t).all() for t in tensors)])
    if not bool(finite.all()):  # one wait for the device, at the end
        raise HarnessError(f"{desc}: training diverged (loss {loss.item():.3g} and weights no longer finite after "
                           f"{steps} steps at learning rate {lr:.3g}, batch {bs}); nothing is decided on NaN: give "
                           "a lower learning rate (--lr, --scratch-lr) or --batch-size")


def train(model: nn.Module, data: DataSplits, epochs: float, *, recipe: Recipe, seed: int,
          device: torch.device | str, teacher: nn.Module | None = None, desc: str = "train",
          progress: bool = False, quiet: bool = False, resume: TrainProgress | None = None,
          deadline: float | None = None, checkpoint=None, checkpoint_every_s: float = 60.0) -> nn.Module:
    """SGD with Nesterov momentum 0.9 (or AdamW) and a cosine learning rate over ``epochs``
    (may be fractional), after the recipe's warm-up. An epoch is ``recipe.train_subset``
    samples (default: the whole train split), drawn without replacement in a fresh seeded
    order, in full batches only (so every step has one shape). With a ``teacher`` and
    ``recipe.distill`` > 0 the loss mixes in distillation from the teacher's outputs on the
    same augmented batch. With ``recipe.cuda_graphs`` on a CUDA device, each step after the
    first few is a replay of one captured graph (:class:`TrainStep`). Trains ``model`` in
    place and returns it in eval mode.

    With a ``deadline`` (a ``time.monotonic()`` value), training pauses at the first epoch
    boundary, after at least one epoch, where the next epoch (timed as the last) would end
    after it: :class:`TrainingPaused` carries the progress, and ``train`` called again on the
    paused model with ``resume=`` that progress (and the same arguments) ends exactly where an
    uninterrupted training would. ``checkpoint``, a function of a :class:`TrainProgress`, is
    called at the first epoch boundary after each ``checkpoint_every_s`` seconds, the model
    holding the weights reached: saved with them, the progress continues a training killed
    later as exactly."""
    if epochs <= 0:
        return model
    device = torch.device(device)
    split = _device_copy(data.train, device)
    n, bs = len(split), min(recipe.batch_size, len(split))
    per_epoch = min(recipe.train_subset or n, n)
    steps = max(1, math.ceil(epochs * per_epoch / bs))
    augment = data.augment == "cifar" and split.images.dim() == 4
    channels_last = _uses_channels_last(model, split.images)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    distilling = teacher is not None and recipe.distill > 0
    if distilling:
        teacher.eval()
    static = recipe.cuda_graphs and (device.type != "cuda" or steps >= MIN_CAPTURED_STEPS)
    step = TrainStep(model, split, data, recipe, bs, augment,
                     torch.channels_last if channels_last else torch.contiguous_format,
                     teacher if distilling else None, static, device)
    factor = lr_factor(steps, recipe.warmup)
    g = torch.Generator().manual_seed(seed)
    if resume is not None:  # it paused where a fresh epoch plan was due, so the next one is drawn at once
        g.set_state(resume.generator)
        step.load_optimizer_state(resume.optimizer)
    plan, pos, paused = None, 0, None
    epoch_start = saved_at = time.monotonic()
    model.train()
    bar = progress_bar(range(resume.step if resume else 0, steps), desc, bar=progress, quiet=quiet)
    for i in bar:
        if plan is None or pos + bs > len(plan["order"]):
            if plan is not None and (deadline is not None or checkpoint is not None):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # the epoch's time is the device's
                now = time.monotonic()
                if deadline is not None and now + (now - epoch_start) > deadline:
                    paused = TrainProgress(i, g.get_state(), _host_copy(step.opt.state_dict()))
                    break
                if checkpoint is not None and now - saved_at >= checkpoint_every_s:
                    checkpoint(TrainProgress(i, g.get_state(), _host_copy(step.opt.state_dict())))
                    saved_at = time.monotonic()
                epoch_start = now
            plan, pos = _epoch_plan(n, bs, 4, augment, g, device), 0
        loss = step({key: v[pos:pos + bs] for key, v in plan.items()}, recipe.lr * factor(i))
        pos += bs
        if progress and i % 25 == 0:  # .item() waits for the GPU: only when a bar shows it
            bar.set_postfix(loss=f"{loss.item():.3f}")
    step.close()
    _check_finite(model, loss, desc, steps, recipe.lr, bs)
    if channels_last:  # the rest of the harness (surgery, criteria) sees ordinary tensors
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    if paused is not None:
        raise TrainingPaused(paused, steps)
    return model


def _host_copy(value):
    """``value`` (nested dicts and lists of tensors and numbers) with every tensor copied to the host."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _host_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_host_copy(v) for v in value)
    return value


def eval_batch_size(device: torch.device) -> int:
    """Images per forward when evaluating: on a CPU a batch whose activations stay in its
    caches (128 gave 1.4-1.6x the images per second of 500 on ResNet-20 and -56, with identical
    logits: benchmarks/eval_batch.py), elsewhere large batches for the GPU's width."""
    return 128 if device.type == "cpu" else 500


@torch.no_grad()
def predict(model: nn.Module, split: TensorSplit, data: DataSplits, device, batch_size: int | None = None,
            features: bool = False) -> torch.Tensor:
    """Logits (or ``forward_features``) in fp32 and eval mode, on the host."""
    fn = model.forward_features if features else model
    device = torch.device(device)
    batch_size = batch_size or eval_batch_size(device)
    split = _device_copy(split, device)
    with evaluating(model):
        outs = [fn(normalize(split.images[i:i + batch_size], data.mean, data.std)).float()
                for i in range(0, len(split), batch_size)]
    return torch.cat(outs).cpu()


def accuracy(model: nn.Module, split: TensorSplit, data: DataSplits, device) -> float:
    """Top-1 accuracy in percent."""
    logits = predict(model, split, data, device)
    return 100.0 * float((logits.argmax(1) == split.labels).float().mean())


def evaluate(model: nn.Module, split: TensorSplit, data: DataSplits, device) -> dict[str, float]:
    """Top-1 accuracy (percent) and mean cross-entropy on ``split``, in fp32."""
    logits = predict(model, split, data, device)
    return {"accuracy": 100.0 * float((logits.argmax(1) == split.labels).float().mean()),
            "loss": float(F.cross_entropy(logits, split.labels))}
