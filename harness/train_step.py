"""One optimisation step of the training engine (harness/training.py) and the recipe it
follows: a batch gathered from the device-resident split, augmented (crop and flip) and
normalised, forward (and the teacher's, when distilling), backward and the optimizer's update,
in a form that a CUDA graph can capture (:class:`TrainStep`)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.data import DataSplits, TensorSplit
from harness.errors import first_line, warn


@dataclass(frozen=True)


class Recipe:
    """How one run trains: everything but the model, the epochs and the seed."""

    lr: float  # at batch_size (already scaled)
    batch_size: int
    weight_decay: float
    optimizer: str = "sgd"
    precision: str = "fp32"  # resolved: fp32 or bf16
    train_subset: int | None = None
    label_smoothing: float = 0.0
    distill: float = 0.0  # weight of the distillation loss from the parent (0: off)
    distill_temperature: float = 4.0
    warmup: float = 0.0  # share of the steps with a linear learning-rate warm-up
    cuda_graphs: bool = False  # the step as one captured CUDA graph (TrainStep); eager elsewhere


def mean_std(mean, std, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation constants shaped to broadcast over ``like``'s batches, on its device."""
    shape = (1, -1) + (1,) * (like.dim() - 2)
    return (torch.tensor(mean, device=like.device, dtype=like.dtype).view(shape),
            torch.tensor(std, device=like.device, dtype=like.dtype).view(shape))


def crop_flip(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random crop after zero-padding by ``pad`` and horizontal flip, for a batch at once,
    on whatever device ``x`` is on."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    cols = ox[:, None] + ar_w
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flipped crop reads its columns backwards
    rows = (oy[:, None] + ar_h)[:, None, :, None].expand(n, c, h, w + 2 * pad)
    out = padded.gather(2, rows)
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _autocast(precision: str, device: torch.device, cache: bool = True):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softened outputs, times T^2 so that its gradients keep
    their scale as T changes (Hinton et al. 2015)."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                    log_target=True, reduction="batchmean") * (t * t)


#: eager steps before a capture: cudnn picks its kernels, the optimizer makes its state
WARMUP_STEPS = 3
#: a fine-tune shorter than this many steps is not captured: capturing costs about what tens of
#: eager steps do (a guess until measured on a GPU: `benchmarks/gpu/capture_check.py --no-check`
#: prints from how many steps capturing pays; the issue's H200 figures, a 1.2 s capture and
#: 24.8 against 12.1 ms per ResNet-56 step at batch 512, would put it near 95)
MIN_CAPTURED_STEPS = 50
# One capture at a time in a process (candidates fine-tuned side by side on several GPUs share
# it), and none after a failed one: a capture that fails leaves PyTorch's allocator marking a
# capture as under way, which the next capture (and an out-of-memory retry) would trip on.
_CAPTURE_LOCK = threading.Lock()
_CAPTURE_FAILED: set = set()  # the causes, each warned about once


class TrainStep:
    """One optimisation step: a batch gathered from the device-resident split (indices, crop
    offsets and flips of the epoch's plan), augmented, normalised, forward (and the teacher's,
    when distilling), backward and the optimizer's update.

    ``static=False`` is the plain eager step. ``static=True`` reads its batch from fixed
    buffers and its learning rate from a tensor (fused SGD or AdamW take it without a host
    sync), so the step never changes shape or address: on CUDA, after WARMUP_STEPS eager
    steps, it is captured once as a CUDA graph and every later step is one replay instead of
    a few hundred kernel launches from Python. Batch-norm statistics and the optimizer's state
    are updated inside the graph. If the capture fails, one warning, and the same static step
    runs eagerly, as does every later one in the process (PyTorch cannot recover a failed
    capture); on a CPU it always does (the CPU tests run this code with capture off)."""

    def __init__(self, model: nn.Module, split: TensorSplit, data: DataSplits, recipe: Recipe, batch_size: int,
                 augment: bool, memory_format, teacher: nn.Module | None, static: bool, device: torch.device):
        self.model, self.split, self.recipe, self.teacher = model, split, recipe, teacher
        self.augment, self.memory_format, self.static, self.device = augment, memory_format, static, device
        self.mean, self.std = mean_std(data.mean, data.std, split.images)  # once: each would be a host copy
        self.capture = static and device.type == "cuda" and not _CAPTURE_FAILED
        params = [p for p in model.parameters() if p.requires_grad]
        lr = torch.tensor(recipe.lr, dtype=torch.float32, device=device) if static else recipe.lr
        fused = True if static else None  # fused optimizers read a tensor learning rate on the device
        if recipe.optimizer == "adamw":
            self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay, fused=fused)
        else:
            self.opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=recipe.weight_decay, nesterov=True,
                                       fused=fused)
        self.lr = lr
        if static:
            self.batch = {"order": torch.zeros(batch_size, dtype=torch.long, device=device)}
            if augment:
                self.batch |= {"oy": torch.zeros(batch_size, dtype=torch.long, device=device),
                               "ox": torch.zeros(batch_size, dtype=torch.long, device=device),
                               "flip": torch.zeros(batch_size, dtype=torch.bool, device=device)}
        self.graph: torch.cuda.CUDAGraph | None = None
        self.side = None  # the stream of the warm-up steps
        self.loss: torch.Tensor | None = None
        self.steps_done = 0

    def compute(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The step itself, exactly what a graph captures."""
        idx = batch["order"]
        x = self.split.images[idx]
        if self.augment:
            x = crop_flip(x, batch["oy"], batch["ox"], batch["flip"])
        x = ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        y = self.split.labels[idx]
        r = self.recipe
        with _autocast(r.precision, self.device, cache=not self.capture):  # a graph keeps no autocast cache
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
            if self.teacher is not None:
                with torch.no_grad():
                    target = self.teacher(x)
                loss = (1 - r.distill) * loss + r.distill * distillation_loss(logits, target, r.distill_temperature)
        loss.backward()
        self.opt.step()
        return loss

    def __call__(self, batch: dict[str, torch.Tensor], lr: float) -> torch.Tensor:
        """One step on ``batch`` (slices of the epoch plan) at learning rate ``lr``; returns
        the loss (a device tensor: reading it waits for the device)."""
        self.steps_done += 1
        if not self.static:
            self.opt.param_groups[0]["lr"] = lr
            self.opt.zero_grad(set_to_none=True)
            return self.compute(batch)
        self.lr.fill_(lr)
        for key, buffer in self.batch.items():
            buffer.copy_(batch[key], non_blocking=True)
        if self.graph is None and self.capture and self.steps_done > WARMUP_STEPS:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
            return self.loss
        self.opt.zero_grad(set_to_none=True)
        if not self.capture:
            return self.compute(self.batch)
        self.side = self.side or torch.cuda.Stream(self.device)  # warm-up steps on a side stream, as capture wants
        self.side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.side):
            loss = self.compute(self.batch)
        torch.cuda.current_stream(self.device).wait_stream(self.side)
        return loss

    def _capture(self) -> None:
        """Records the step as a CUDA graph (its first replay is the current step); on
        failure, one warning, and this step and every later one in the process stay eager."""
        if _CAPTURE_FAILED:  # another step's capture failed meanwhile
            self.capture = False
            return
        self.opt.zero_grad(set_to_none=True)  # the graph allocates the gradients it writes
        graph = torch.cuda.CUDAGraph()
        # Adam's family refuses to be captured unless ``capturable`` (fused, its kernel ignores
        # the flag); set only now, as eager steps with it warn that they run uncaptured
        capturable = [group for group in self.opt.param_groups if "capturable" in group]
        for group in capturable:
            group["capturable"] = True
        before = torch.cuda.current_stream(self.device)
        self.side = self.side or torch.cuda.Stream(self.device)
        try:
            # on this step's device and stream: by default a capture runs on one process-wide
            # stream of the device current when it was made, and would record nothing of a
            # model on another GPU; thread_local, as other threads may be training meanwhile
            with _CAPTURE_LOCK, torch.cuda.device(self.device), \
                    torch.cuda.graph(graph, stream=self.side, capture_error_mode="thread_local"):
                self.loss = self.compute(self.batch)
        except Exception as exc:
            torch.cuda.set_stream(before)  # a failed capture's end leaves its stream current
            torch.cuda.synchronize(self.device)
            self.capture, self.loss = False, None
            for group in capturable:
                group["capturable"] = False
            cause = f"{type(exc).__name__}: {first_line(exc)}"
            if cause not in _CAPTURE_FAILED:
                _CAPTURE_FAILED.add(cause)
                warn(f"CUDA graph capture failed ({cause}); this process trains eagerly from here (--cuda-graphs "
                     "off does so without trying)")
            return
        self.graph = graph

    def load_optimizer_state(self, saved: dict) -> None:
        """The optimizer's state (momentum buffers, step counts) from a paused training, with
        this step's own settings (learning-rate tensor, fused or not), which may differ from
        the saving device's."""
        own = [{k: v for k, v in group.items() if k != "params"} for group in self.opt.param_groups]
        self.opt.load_state_dict(dict(saved, param_groups=[dict(mine, params=theirs["params"])
                                                           for mine, theirs in zip(own, saved["param_groups"])]))
        for group, mine in zip(self.opt.param_groups, own):  # loading deep-copies: the graph reads self.lr itself
            group.update(mine)

    def close(self) -> None:
        """Frees the graph and the gradients it allocated."""
        self.opt.zero_grad(set_to_none=True)
        self.graph = self.loss = None
