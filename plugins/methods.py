"""Pruning methods: the decision of one iteration, given its candidates."""

from __future__ import annotations

from harness import hookimpl
from harness.api import Method


class CKAGuided(Method):
    """The paper's Algorithm 1: fine-tune each candidate briefly, keep the one whose
    representation is most similar to its parent's; a tie goes to the layer candidate
    (``epsilon`` is added to the filter candidate's similarity)."""

    name = "cka"
    candidate_structures = ("layer", "filter")

    def select(self, step, candidates):
        for cand in candidates:
            cand.model = step.finetune(cand.model, step.config.candidate_epochs)
            cand.similarity = step.similarity(step.parent, cand.model)
        bonus = lambda c: step.config.epsilon if c.structure == "filter" else 0.0  # noqa: E731
        # max() keeps the first of equal scores: candidates come in tie-break order
        return max(candidates, key=lambda c: c.similarity + bonus(c))


@hookimpl
def register_methods():
    return [CKAGuided()]
