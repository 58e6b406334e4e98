"""Robust accuracy under FGSM (Goodfellow et al., 2015), computed by foolbox."""

from __future__ import annotations

from fractions import Fraction

import torch

from harness.api import Evaluator, Option
from harness.errors import HarnessError


def parse_epsilons(value) -> list[float]:
    """``"1/255,2/255,8/255"`` (or a list of numbers) -> floats."""
    items = value.split(",") if isinstance(value, str) else value
    return [float(Fraction(str(v).strip())) for v in items if str(v).strip()]


def check_epsilons(eps) -> str | None:
    if not eps:
        return "give at least one epsilon"
    if any(e < 0 or e > 1 for e in eps):
        return "every epsilon must be between 0 and 1 (images are in [0, 1])"
    return None


class FGSM(Evaluator):
    """foolbox's FGSM (L-infinity) on a ``foolbox.PyTorchModel`` whose preprocessing is the
    data set's normalisation, with bounds (0, 1): perturbations are measured in pixel
    space, as in the literature. Robust accuracy at each epsilon on a fixed, seeded test
    subset; at epsilon 0 it is the clean accuracy on that subset."""

    name = "fgsm"
    description = "robust accuracy (%) under foolbox's FGSM at --fgsm-eps, on a fixed test subset"
    options = (
        Option("fgsm_eps", [1 / 255, 2 / 255, 8 / 255], "FGSM epsilons in [0, 1] pixel units, comma-separated "
               "(fractions allowed: 1/255,8/255).", parse=parse_epsilons, check=check_epsilons),
        Option("fgsm_subset", 1000, "Test images the FGSM evaluator attacks (fixed seeded subset).", parse=int,
               check=lambda n: None if n >= 1 else "must be at least 1"),
    )

    def evaluate(self, model, ctx):
        import foolbox

        data = ctx.data
        if data.train.images.dim() != 4:
            raise HarnessError("fgsm attacks images; this data set has no images")
        split = data.test.subset(ctx.options["fgsm_subset"], seed=1)
        epsilons = ctx.options["fgsm_eps"]
        model.eval()
        fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), device=ctx.device,
                                      preprocessing=dict(mean=list(data.mean), std=list(data.std), axis=-3))
        attack = foolbox.attacks.FGSM()
        success = []
        for i in range(0, len(split), 250):
            x = split.images[i:i + 250].to(ctx.device)
            y = split.labels[i:i + 250].to(ctx.device)
            _, _, ok = attack(fmodel, x, y, epsilons=epsilons)
            success.append(ok.cpu())
        robust = 100.0 * (1 - torch.cat(success, dim=1).float().mean(dim=1))
        out = {f"eps_{_label(e)}": round(float(a), 4) for e, a in zip(epsilons, robust)}
        if ctx.baseline:
            out |= {f"{k}_delta": round(v - ctx.baseline[k], 4) for k, v in list(out.items()) if k in ctx.baseline}
        return out | {"epsilons": epsilons, "n": len(split)}


def _label(eps: float) -> str:
    """1/255 -> "1_255" when it is a whole number of grey levels, else the number."""
    levels = eps * 255
    return f"{round(levels)}_255" if abs(levels - round(levels)) < 1e-6 else f"{eps:g}"
