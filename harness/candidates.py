"""The candidates of one iteration: a layer candidate and, for each other structure type, a
candidate that removes the lowest-scoring units until it saves as much (``--match``)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from harness.api import Candidate, CriterionContext, Method, Structure, Unit
from harness.channel_groups import untouched
from harness.errors import HarnessError, first_line
from harness.runplugins import label_of
from harness.seeds import derive_seed
from harness.session import Session
from harness.training import normalize


def build_candidates(s: Session, model: nn.Module, iteration: int, method: Method) -> list[Candidate]:
    """A layer candidate (the ``p_layer`` lowest-scoring blocks) and, for each other
    structure type, a candidate of the lowest-scoring units until its reduction matches
    the layer candidate's (``--match``). Returned in tie-break order."""
    cfg = s.cfg
    criterion = s.plugins.criterion
    cctx = CriterionContext(normalize(s.data.calib.images.to(s.device), s.data.mean, s.data.std),
                            s.data.calib.labels.to(s.device), derive_seed(cfg.seed, iteration, "criterion"),
                            progress=s.progress)
    structures = s.structures(model)
    units = {t: st.units(model) for t, st in structures.items()}
    offered = [t for t in structures if units[t]]
    wanted = method.structures(offered)
    if wanted and cfg.record_decisions:  # the records describe every candidate, not only the method's
        wanted = offered
    def size(m: nn.Module) -> float:  # what the candidates match (--match)
        return s.measure(m, cfg.match)

    parent_size = size(model)
    candidates, target = [], None

    if "layer" in offered:
        layer = structures["layer"]
        scores = valid_scores(criterion, criterion.scores(model, layer, units["layer"], cctx), units["layer"], layer)
        chosen = [u for _, u in sorted(zip(scores, units["layer"]), key=lambda p: p[0])[: cfg.p_layer]]
        child = checked(layer.remove(model, chosen), "layer", cctx.calib_inputs[:2])
        target = parent_size - size(child)
        if "layer" in wanted:
            candidates.append(Candidate("layer", chosen, child))
    if target is None:  # no block left: width only, a fixed share per iteration
        target = cfg.filter_step * parent_size

    for t in wanted:
        if t == "layer":
            continue
        structure = structures[t]
        scores = valid_scores(criterion, criterion.scores(model, structure, units[t], cctx), units[t], structure)
        chosen = fill_to_target(size, model, structure, units[t], scores, target, cfg.round_to, cfg.match)
        if chosen:
            candidates.append(Candidate(t, chosen, checked(structure.remove(model, chosen), t, cctx.calib_inputs[:2])))
    order = {t: i for i, t in enumerate(offered)}
    return sorted(candidates, key=lambda c: order[c.type])


def valid_scores(criterion, scores, units: list[Unit], structure: Structure) -> list[float]:
    """A criterion's scores as it must give them: one finite number per unit, in the units'
    order; else one line naming the criterion (fewer scores left units out of the ranking
    silently, and a decision taken on NaN is no decision)."""
    def wrong(gave: str) -> HarnessError:
        return HarnessError(f"{label_of(criterion, 'criterion')} gave {gave} the {len(units)} units of structure "
                            f"{getattr(structure, 'name', '?')!r}; a criterion gives one finite number per unit: "
                            f"check it with harness check-plugin criterion {getattr(criterion, 'name', '?')}")

    try:
        numbers = [float(score) for score in scores]
    except (TypeError, ValueError, RuntimeError) as exc:
        raise wrong(f"scores that are not numbers ({type(exc).__name__}: {first_line(exc, 80)}) for") from None
    if len(numbers) != len(units):
        raise wrong(f"{len(numbers)} scores for")
    bad = next((i for i, n in enumerate(numbers) if not math.isfinite(n)), None)
    if bad is not None:
        raise wrong(f"{numbers[bad]:g} for unit {bad} of")
    return numbers


def checked(model: nn.Module, what: str, x: torch.Tensor) -> nn.Module:
    """``model`` once it has run ``x`` in train mode and in eval mode (left as it was: batch-norm
    statistics, modes, random state), so that a candidate that cannot be fine-tuned or measured
    (a branch that runs only in training and was not pruned with the trunk) stops the run here,
    in one line, rather than inside its fine-tune."""
    for train in (True, False):
        try:
            with untouched(model), torch.no_grad():
                model.train(train)
                model(x)
        except Exception as exc:
            raise HarnessError(f"the {what} candidate does not run in {'train' if train else 'eval'} mode: "
                               f"{type(exc).__name__}: {first_line(exc)}") from None
    return model


def fill_to_target(size: Callable[[nn.Module], float], model: nn.Module, structure: Structure, units: list[Unit],
                   scores: list[float], target: float, round_to: int, match: str = "flops") -> list[Unit]:
    """The lowest-scoring units until their removal saves ``target`` of ``size`` (the
    ``--match`` measure, named by ``match``), always leaving one unit per site. Every unit of a
    site costs the same (a filter of a convolution, a head of an attention): the structure's
    ``prices`` give each site's price, or else one trial removal per site does.
    Under ``--round-to N`` the units come in aligned steps (:func:`aligned_steps`), so the
    candidate reaches its target with every layer it touches keeping a multiple of N."""
    per_site: dict[str, list[Unit]] = {}
    for u in units:
        per_site.setdefault(u.site, []).append(u)
    cost = structure.prices(model, match) if hasattr(structure, "prices") else {}
    if not cost:  # a trial removal per site
        parent_size = size(model)
        cost = {site: parent_size - size(structure.remove(model, [us[0]])) for site, us in per_site.items()
                if len(us) > 1}
    chosen, removed = [], 0.0
    if round_to > 1:
        for step in aligned_steps(units, scores, round_to):
            if removed >= target:
                break
            chosen += step
            removed += cost[step[0].site] * len(step)
        return chosen
    left = {site: len(us) - 1 for site, us in per_site.items()}
    ranked = [u for _, u in sorted(zip(scores, units), key=lambda p: p[0])]
    for unit in ranked:
        if removed >= target:
            break
        if left[unit.site] > 0:
            chosen.append(unit)
            left[unit.site] -= 1
            removed += cost[unit.site]
    return chosen


def aligned_steps(units: list[Unit], scores: list[float], multiple: int) -> list[list[Unit]]:
    """Removal steps under ``--round-to``, in the order a width candidate takes them: each
    step takes the next lowest-scoring units of one layer, as many as bring its kept count
    down to the next multiple of ``multiple`` (rounded down, as Torch-Pruning's ``round_to``;
    never below ``multiple``); steps are ordered by their mean score. A layer narrower than
    ``multiple`` goes one unit at a time, down to one. Filling step by step keeps the
    candidate near its target: rounding a finished selection down overshoots it (a 16-channel
    layer that keeps 15 would keep 8)."""
    per_site: dict[str, list[tuple[float, Unit]]] = {}
    for score, u in sorted(zip(scores, units), key=lambda p: p[0]):
        per_site.setdefault(u.site, []).append((score, u))
    steps = []
    for site, mine in per_site.items():
        size = len(mine)
        if size >= multiple:
            levels = range((size - 1) // multiple * multiple, multiple - 1, -multiple)
        else:
            levels = range(size - 1, 0, -1)
        start = 0
        for order, kept in enumerate(levels):
            step = mine[start:size - kept]
            steps.append((sum(sc for sc, _ in step) / len(step), site, order, [u for _, u in step]))
            start = size - kept
    return [step for *_, step in sorted(steps, key=lambda t: t[:3])]
