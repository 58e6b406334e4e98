"""The oracle's verdict on one decision, from each candidate's accuracies after the oracle's
longer fine-tune: what a run records (``--oracle-epochs``) and what ``harness decisions``
scores every selector against.

Since the oracle reads the test split (no decision inside a run reads it, and the published
weights never trained on it), a run records each candidate's accuracy per seed on the
validation and the test split and, per split, the paired standard error of the gap between
the two best candidates from their per-image outcomes; its verdict is
:class:`~harness.decision_stats.TieRule`'s on the test split. :func:`oracle_verdict` is the
rule of older records (the validation split, the seeds' largest disagreement)."""

from __future__ import annotations

import math
import statistics

import torch

from harness.decision_stats import TieRule

#: the split the oracle's verdict reads
ORACLE_SPLIT = "test"
TIE_RULE = TieRule()


def judged_outcomes(correct: list[torch.Tensor]) -> tuple[list[list[float]], float | None]:
    """From each candidate's per-image outcomes (a seeds x images tensor, 1 = right): its
    accuracy per seed (%), and the paired standard error (points) of the gap between the two
    best candidates' mean accuracies: both are scored on the same images, so the error of the
    gap is that of the per-image differences, far below the sum of two binomial errors."""
    accuracies = [[round(100 * float(row.float().mean()), 4) for row in c] for c in correct]
    means = [statistics.fmean(a) for a in accuracies]
    order = sorted(range(len(means)), key=lambda i: -means[i])  # as TieRule orders them
    if len(order) < 2:
        return accuracies, None
    per_image = correct[order[0]].float().mean(0) - correct[order[1]].float().mean(0)
    return accuracies, round(100 * float(per_image.std()) / math.sqrt(len(per_image)), 4)


def oracle_verdict(accuracies: list[list[float]]) -> dict:
    """The oracle's answer from each candidate's accuracies (one per seed): the index of the
    best candidate, or None for a tie (a gap between the two best means no larger than the
    largest disagreement between one candidate's seeds, or no gap at all). This is the verdict
    a run records as it goes; ``harness decisions`` judges every decision again from the raw
    accuracies with its ``TIE_RULE``, which also counts the evaluation images' binomial error."""
    means = [statistics.fmean(a) for a in accuracies]
    order = sorted(range(len(means)), key=lambda i: -means[i])  # stable: equal means keep their order
    gap = means[order[0]] - means[order[1]] if len(means) > 1 else math.inf
    disagreement = max(max(a) - min(a) for a in accuracies)
    tie = len(means) > 1 and (gap == 0 or gap < disagreement)
    return {"means": means, "best": None if tie else order[0], "gap": round(gap, 4),
            "disagreement": round(disagreement, 4)}
