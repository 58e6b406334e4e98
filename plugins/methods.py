"""Pruning methods: the decision of one iteration, given its candidates. All share the
loop in harness/loop.py, the budget and the criterion, so only the decision differs."""

from __future__ import annotations

from functools import partial

from harness import hookimpl
from harness.api import Method


class CKAGuided(Method):
    """The paper's Algorithm 1: fine-tune each candidate briefly and keep the one whose
    representation is most similar to its parent's; a tie goes to the layer candidate,
    and ``--epsilon`` is added to the similarity of every other candidate. With more
    than two structure types (layers, heads and neurons of a transformer) every type
    gets a candidate: the paper's "more pruning settings as additional branches"."""

    name = "cka"
    description = "keep the candidate most similar to its parent (the paper's method)"

    def select(self, step, candidates):
        step.finetune_candidates(candidates, step.config.candidate_epochs)
        for cand in candidates:
            cand.similarity = step.similarity(step.parent, cand.model)
        bonus = lambda c: 0.0 if c.type == "layer" else step.config.epsilon  # noqa: E731
        # max() keeps the first of equal scores: candidates come in tie-break order
        return max(candidates, key=lambda c: c.similarity + bonus(c))


class RandomWalk(Method):
    """A seeded coin flip between the candidates (the paper's Table III baseline). The
    chosen candidate gets the same candidate fine-tuning as a CKA winner, so the kept
    models of both methods are trained equally; the other is never trained."""

    name = "random-walk"
    description = "a seeded random choice between the candidates"

    def select(self, step, candidates):
        chosen = step.rng.choice(candidates)
        step.finetune_candidates([chosen], step.config.candidate_epochs)
        return chosen


class SingleStructure(Method):
    """Prunes one structure type only, at the per-iteration reduction the layer candidate
    sets (so it matches the other methods step for step)."""

    def __init__(self, name: str, structure_type: str, description: str):
        self.name, self.structure_type, self.description = name, structure_type, description

    def structures(self, offered):
        return [self.structure_type] if self.structure_type in offered else []

    def select(self, step, candidates):
        (chosen,) = candidates
        step.finetune_candidates([chosen], step.config.candidate_epochs)
        return chosen


class ValidationGreedy(Method):
    """The alternative a practitioner tries first: fine-tune each candidate as briefly as the
    CKA-guided method does and keep the one that does best on the validation split (held out
    of training; never the test split). A tie goes to the earlier candidate (layer first)."""

    def __init__(self, name: str, key: str, sign: float, description: str):
        self.name, self.key, self.sign, self.description = name, key, sign, description

    def select(self, step, candidates):
        step.finetune_candidates(candidates, step.config.candidate_epochs)
        # max() keeps the first of equal scores: candidates come in tie-break order
        return max(candidates, key=lambda c: self.sign * step.validate(c)[self.key])


class LayersThenFilters(SingleStructure):
    """Pons et al. (ICPR 2024): remove blocks while any is removable, then filters."""

    def __init__(self):
        super().__init__("layers-then-filters", "layer", "remove blocks until none is left, then filters")

    def structures(self, offered):
        return ["layer"] if "layer" in offered else [t for t in offered if t == "filter"]


@hookimpl
def register_methods():
    return [
        CKAGuided,
        RandomWalk,
        partial(SingleStructure, "layer-only", "layer", "remove blocks only"),
        partial(SingleStructure, "filter-only", "filter", "remove filters only, at the layer candidate's reduction"),
        LayersThenFilters,
        partial(ValidationGreedy, "accuracy-greedy", "val_accuracy", 1.0,
                "keep the candidate with the higher validation accuracy after the brief fine-tune"),
        partial(ValidationGreedy, "loss-greedy", "val_loss", -1.0,
                "keep the candidate with the lower validation loss after the brief fine-tune"),
    ]
