"""Importance criteria. Each scores units of any structure through the structure's
ablate/weights interface; lower = less important, comparable across layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from harness import hookimpl
from harness.api import Criterion


@torch.no_grad()
def _log_probs(model, inputs, batch_size=256):
    return torch.cat([F.log_softmax(model(inputs[i:i + batch_size]).double(), dim=1)
                      for i in range(0, len(inputs), batch_size)])


class KLCriterion(Criterion):
    """KL(parent || ablated) of the softmax outputs on the calibration split, averaged over
    samples (Luo & Wu, CVPR 2020): a unit whose removal barely changes the output
    distribution is unimportant. Being measured at the output, scores compare across layers."""

    name = "kl"

    @torch.no_grad()
    def scores(self, model, structure, units, ctx):
        was_training = model.training
        model.eval()
        parent = _log_probs(model, ctx.calib_inputs)
        # A unit inside a block changes nothing before that block: when the model can be
        # entered at a block (forward_to/forward_from), compute the prefix once per block.
        prefix_ok = hasattr(model, "forward_from")
        cached_site, prefix = None, None
        out = []
        for unit in tqdm(units, desc=f"kl scores ({structure.name})", leave=False, disable=not ctx.progress):
            if prefix_ok and unit.site != cached_site:
                cached_site, prefix = unit.site, model.forward_to(unit.site, ctx.calib_inputs)
            with structure.ablate(model, [unit]):
                if prefix_ok:
                    ablated = F.log_softmax(model.forward_from(unit.site, prefix).double(), dim=1)
                else:
                    ablated = _log_probs(model, ctx.calib_inputs)
            kl = F.kl_div(ablated, parent, log_target=True, reduction="batchmean")
            out.append(max(float(kl), 0.0))
        model.train(was_training)
        return out


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
        was_training = model.training
        model.eval()  # batch norm uses its running statistics, as the pruned model will
        params = [p for p in model.parameters()]
        grads = [torch.zeros_like(p) for p in params]
        n = len(ctx.calib_inputs)
        for i in range(0, n, 256):
            x, y = ctx.calib_inputs[i:i + 256], ctx.calib_labels[i:i + 256]
            loss = F.cross_entropy(model(x), y, reduction="sum") / n
            for g, dp in zip(grads, torch.autograd.grad(loss, params)):
                g += dp
        out = []
        with torch.no_grad():
            before = [p.detach().clone() for p in params]
            for unit in tqdm(units, desc=f"taylor scores ({structure.name})", leave=False, disable=not ctx.progress):
                with structure.ablate(model, [unit]):
                    change = sum(float(((p - p0) * g).sum()) for p, p0, g in zip(params, before, grads))
                out.append(abs(change))
        model.train(was_training)
        return out


class RandomCriterion(Criterion):
    """Uniform random scores from the run's seed: a baseline for the other criteria."""

    name = "random"

    def scores(self, model, structure, units, ctx):
        g = torch.Generator().manual_seed(ctx.seed)
        return torch.rand(len(units), generator=g, dtype=torch.float64).tolist()


@hookimpl
def register_criteria():
    return [KLCriterion(), L1Criterion(), TaylorCriterion(), RandomCriterion()]
