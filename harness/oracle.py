"""The oracle's verdict on one decision, from each candidate's accuracies after the oracle's
longer fine-tune: what a run records (``--oracle-epochs``) and what ``harness decisions``
scores every selector against."""

from __future__ import annotations

import math
import statistics


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
