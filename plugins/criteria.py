"""Importance criteria. Each scores units of any structure through the structure's
ablate/weights interface; lower = less important, comparable across layers."""

from __future__ import annotations

import warnings
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from harness import hookimpl
from harness.api import Criterion
from harness.errors import first_line
from harness.api import progress
from harness.surgery import evaluating

#: how many images (ablations x calibration inputs) one batched KL forward may hold, by
#: device type; the number of ablations per forward is this divided by the calibration size.
#: On CPU, small: activations of more than ~32 MB are allocated (and page-faulted) afresh by
#: every operation, which cost more than the batching saved (below).
KL_IMAGES_PER_FORWARD = {"cpu": 512, "cuda": 16384}
KL_IMAGES_DEFAULT = 4096

#: where the KL criterion runs many ablations per forward pass (kl_scores_batched) rather
#: than one at a time (kl_scores_loop). Not on CPU, by measurement (benchmarks/kl_speed.py,
#: resnet20 pretrained, 256 CIFAR-10 calibration images, all 336 filters, 2-core AMD EPYC,
#: 2 threads, torch 2.14, quiet machine): loop 9.0-10.4 s; batched 17.5-19.5 s at 512 images
#: per forward, 29.4 s at 1024, 45.8 s at 4096 (whole forward per unit: 36.7-39.1 s). The loop
#: is bound by convolutions that already fill the cores; vmap adds work (batch norm with
#: batched weights becomes movedim + copy + normalise + mul + add, ~25% more user time)
#: and the large batched activations spend seconds in page faults (sys time).
#: (On a loaded machine the order flips: with another process busy on one of the two
#: cores, the loop took 146 s and batched 42 s, the loop's many small parallel operations
#: each waiting for a descheduled thread.)
KL_BATCHED_DEVICES = frozenset({"cuda"})


@torch.no_grad()
def _log_probs(model, inputs, batch_size=256):
    return torch.cat([F.log_softmax(model(inputs[i:i + batch_size]).double(), dim=1)
                      for i in range(0, len(inputs), batch_size)])


def _kl(ablated, parent):
    return max(float(F.kl_div(ablated, parent, log_target=True, reduction="batchmean")), 0.0)


@torch.no_grad()
def kl_scores_loop(model, structure, units, inputs, *, parent=None, prefix=True, bar=False,
                   quiet=False) -> list[float]:
    """KL(parent || ablated) of each unit, one ablation at a time: the reference.
    ``prefix``: when the model can be entered at a block (forward_to/forward_from), compute
    the network before a unit's block once per block; otherwise a whole forward per unit."""
    with evaluating(model):
        if parent is None:
            parent = _log_probs(model, inputs)
        use_prefix = prefix and hasattr(model, "forward_from")
        cached_site, h = None, None
        out = []
        for unit in progress(units, f"kl scores ({structure.name})", bar=bar, quiet=quiet):
            if use_prefix and unit.site != cached_site:
                cached_site, h = unit.site, model.forward_to(unit.site, inputs)
            with structure.ablate(model, [unit]):
                if use_prefix:
                    ablated = F.log_softmax(model.forward_from(unit.site, h).double(), dim=1)
                else:
                    ablated = _log_probs(model, inputs)
            out.append(_kl(ablated, parent))
        return out


class _Tail(nn.Module):
    """The model from a unit's block on (the whole model when ``site`` is None), as one
    module whose parameters torch.func.functional_call can replace."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.site = None

    def forward(self, h):
        return self.model(h) if self.site is None else self.model.forward_from(self.site, h)


class _Changes:
    """Which of a model's parameters and buffers differ from a snapshot taken at creation:
    one flat comparison (and one device sync) per dtype, not one per tensor."""

    def __init__(self, model):
        self.tensors = dict(model.named_parameters())
        self.tensors.update(model.named_buffers())
        groups = defaultdict(list)
        for name, t in self.tensors.items():
            if t.numel():
                groups[(t.dtype, t.device)].append(name)
        self.groups = []
        for names in groups.values():
            sizes = [self.tensors[n].numel() for n in names]
            ends = torch.tensor(sizes).cumsum(0)
            flat = torch.cat([self.tensors[n].detach().reshape(-1) for n in names])
            self.groups.append((names, ends, flat))

    def original(self, name):
        for names, ends, flat in self.groups:
            if name in names:
                i = names.index(name)
                start = int(ends[i - 1]) if i else 0
                return flat[start:int(ends[i])].view_as(self.tensors[name])
        raise KeyError(name)

    def changed(self) -> list[str]:
        out = []
        for names, ends, flat in self.groups:
            now = torch.cat([self.tensors[n].detach().reshape(-1) for n in names])
            where = (now != flat).nonzero().flatten().cpu()
            if len(where):
                out += [names[i] for i in torch.searchsorted(ends, where, right=True).unique().tolist()]
        return out


@torch.no_grad()
def kl_scores_batched(model, structure, units, inputs, *, parent=None, bar=False, images=None,
                      min_batch=2) -> list[float]:
    """The scores of :func:`kl_scores_loop`, many ablations per forward pass.

    Each unit is ablated once, just long enough to record which parameters (and buffers)
    it changes and their ablated values. Consecutive units of one site (they share the
    prefix up to their block) are stacked, up to ``images`` (ablations x inputs) at a time,
    and the model from that block on runs once under torch.func.vmap over
    torch.func.functional_call with only the changed tensors batched (a tensor that one
    unit of the chunk changes and another does not is stacked with its original value).
    A chunk of fewer than ``min_batch`` units, or one that vmap cannot run (an operation
    without a batching rule, out of memory), is scored by the loop: never other scores."""
    with evaluating(model):
        if parent is None:
            parent = _log_probs(model, inputs)
        use_prefix = hasattr(model, "forward_from")
        if images is None:
            images = KL_IMAGES_PER_FORWARD.get(inputs.device.type, KL_IMAGES_DEFAULT)
        chunk_units = max(1, images // len(inputs))
        tail = _Tail(model)
        changes = _Changes(model)
        out: list[float | None] = [None] * len(units)
        cache = {"site": None, "h": None}
        failed_sites = set()

        def prefix_for(site):
            if not use_prefix:
                return inputs
            if cache["site"] != site:
                cache["h"] = None  # free the old prefix first
                cache["site"], cache["h"] = site, model.forward_to(site, inputs)
            return cache["h"]

        def by_loop(pending):
            idx = [i for i, _ in pending]
            scores = kl_scores_loop(model, structure, [units[i] for i in idx], inputs, parent=parent, quiet=True)
            for i, s in zip(idx, scores):
                out[i] = s

        def flush(site, pending):
            names = sorted({n for _, ablated in pending for n in ablated})
            if len(pending) < min_batch or not names or site in failed_sites:
                return by_loop(pending)
            stacked = {"model." + n: torch.stack([ablated.get(n, changes.original(n)) for _, ablated in pending])
                       for n in names}
            tail.site = site if use_prefix else None
            h = prefix_for(site)
            try:
                logits = torch.func.vmap(lambda p: torch.func.functional_call(tail, p, (h,)))(stacked)
            except Exception as exc:  # noqa: BLE001 - any failure: the loop decides
                logits, oom = None, isinstance(exc, torch.OutOfMemoryError)
                why = f"{type(exc).__name__}: {first_line(exc)}"
            # (out of the handler: the exception's frames, and the memory they hold, are gone)
            if logits is None:
                del stacked
                if oom and len(pending) > 1:  # half as many at a time
                    half = len(pending) // 2
                    flush(site, pending[:half])
                    return flush(site, pending[half:])
                failed_sites.add(site)
                warnings.warn(f"kl: cannot batch the ablations at {site} ({why}); scoring them one at a time",
                              RuntimeWarning, stacklevel=2)
                return by_loop(pending)
            ablated = F.log_softmax(logits.double(), dim=-1)
            kl = (parent.exp() * (parent - ablated)).sum(dim=(1, 2)) / len(inputs)
            for (i, _), s in zip(pending, kl.tolist()):
                out[i] = max(s, 0.0)

        site, pending = None, []
        for i, unit in enumerate(progress(units, f"kl scores ({structure.name}, batched)", bar=bar)):
            if pending and (unit.site != site or len(pending) >= chunk_units):
                flush(site, pending)
                pending = []
            site = unit.site
            with structure.ablate(model, [unit]):
                pending.append((i, {n: changes.tensors[n].detach().clone() for n in changes.changed()}))
        if pending:
            flush(site, pending)
        return out


def kl_batched_by_default(device: torch.device | str) -> bool:
    return torch.device(device).type in KL_BATCHED_DEVICES


class KLCriterion(Criterion):
    """KL(parent || ablated) of the softmax outputs on the calibration split, averaged over
    samples (Luo & Wu, CVPR 2020): a unit whose removal barely changes the output
    distribution is unimportant. Being measured at the output, scores compare across layers.

    A unit inside a block changes nothing before that block: when the model can be entered
    at a block (forward_to/forward_from), the prefix is computed once per block. On the
    devices of ``KL_BATCHED_DEVICES`` many ablations run per forward pass
    (:func:`kl_scores_batched`); elsewhere one at a time (:func:`kl_scores_loop`)."""

    name = "kl"

    def scores(self, model, structure, units, ctx):
        x = ctx.calib_inputs
        score = kl_scores_batched if kl_batched_by_default(x.device) else kl_scores_loop
        return score(model, structure, list(units), x, bar=ctx.progress)


class L1Criterion(Criterion):
    """Mean absolute weight of the unit's tensors (L1 norm divided by size, so that units
    of different fan-in compare)."""

    name = "l1"

    def scores(self, model, structure, units, ctx):
        out = []
        for unit in units:
            tensors = structure.weights(model, unit)
            total = sum(float(t.detach().abs().sum()) for t in tensors)
            out.append(total / sum(t.numel() for t in tensors))
        return out


class TaylorCriterion(Criterion):
    """First-order Taylor estimate of the change in loss when a unit is removed (in the
    spirit of Molchanov et al., CVPR 2019): |sum over parameters of g * delta|, where g is
    the gradient of the cross-entropy on the calibration split (one backward pass for
    all units) and delta is what the structure's ablation changes in the parameters. Being
    an estimate of the loss change, scores compare across layers and structure types."""

    name = "taylor"
    description = "first-order Taylor estimate of the loss change (one backward pass)"

    def scores(self, model, structure, units, ctx):
        params = [p for p in model.parameters()]
        grads = [torch.zeros_like(p) for p in params]
        n = len(ctx.calib_inputs)
        with evaluating(model):  # batch norm uses its running statistics, as the pruned model will
            for i in range(0, n, 256):
                x, y = ctx.calib_inputs[i:i + 256], ctx.calib_labels[i:i + 256]
                loss = F.cross_entropy(model(x), y, reduction="sum") / n
                for g, dp in zip(grads, torch.autograd.grad(loss, params)):
                    g += dp
        out = []
        with torch.no_grad():
            before = [p.detach().clone() for p in params]
            for unit in progress(units, f"taylor scores ({structure.name})", bar=ctx.progress):
                with structure.ablate(model, [unit]):
                    change = sum(float(((p - p0) * g).sum()) for p, p0, g in zip(params, before, grads))
                out.append(abs(change))
        return out


class RandomCriterion(Criterion):
    """Uniform random scores from the run's seed: a baseline for the other criteria."""

    name = "random"

    def scores(self, model, structure, units, ctx):
        g = torch.Generator().manual_seed(ctx.seed)
        return torch.rand(len(units), generator=g, dtype=torch.float64).tolist()


@hookimpl
def register_criteria():
    return [KLCriterion, L1Criterion, TaylorCriterion, RandomCriterion]
