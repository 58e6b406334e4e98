"""Example prunebench plugins, registered through the ``harness`` entry-point group:

- criterion ``l2-norm``: the root-mean-square weight of a unit (a weight-magnitude
  criterion like the built-in ``l1``, with another norm);
- similarity ``rsa``: representational similarity analysis, the Pearson correlation of
  the two representations' (cosine) dissimilarity matrices (Kriegeskorte et al., 2008);
- evaluator ``ece``: expected calibration error of the test predictions (Guo et al.,
  2017), with its number of bins as a plugin option (``--ece-bins``);
- method ``val-agreement``: keep the candidate whose validation predictions agree most with
  its parent's (fidelity rather than accuracy), reading the validation split through ``Step``
  and recording its numbers in ``Candidate.info``;
- model ``example-vgg`` and structure ``vgg-layer`` (in ``vgg.py``): a plain CNN that offers
  the width protocol only, with its own layer structure;
- data set ``example-shapes`` (in ``shapes.py``): images of four patterns made on the spot.

Only the public API is used (``harness.api``, ``harness.hookimpl``); ``tests/`` runs the
conformance kit (``harness.testing``, ``harness check-plugin``) on each plugin. Each hook returns
classes: every run gets objects of its own.
"""

from __future__ import annotations

import torch

import harness
from harness.api import Criterion, Evaluator, Method, Option, Similarity, predict


class L2Norm(Criterion):
    name = "l2-norm"
    description = "root-mean-square weight of the unit's tensors (lower = less important)"

    def scores(self, model, structure, units, ctx):
        out = []
        for unit in units:
            tensors = [t.detach() for t in structure.weights(model, unit)]
            total = sum(float(t.pow(2).sum()) for t in tensors)
            out.append((total / sum(t.numel() for t in tensors)) ** 0.5)
        return out


def dissimilarities(x: torch.Tensor) -> torch.Tensor:
    """Upper triangle of the cosine-distance matrix between the rows of ``x``. (Correlation
    distance would centre each row across its features, which an orthogonal transform of
    the feature space does not preserve.)"""
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rdm = 1 - x @ x.T
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    return rdm[i, j]


class RSA(Similarity):
    name = "rsa"
    description = ("Pearson correlation of the two representational dissimilarity matrices, in [-1, 1]; "
                   "higher = more similar; invariant to isotropic scaling and orthogonal transforms")
    maximum = 1.0

    def __call__(self, x, y):
        x, y = self.matrices(x, y)  # the same inputs in both, as float64 rows
        a, b = dissimilarities(x), dissimilarities(y)
        a, b = a - a.mean(), b - b.mean()
        denom = a.norm() * b.norm()
        return float(a @ b / denom) if denom > 0 else 0.0


class ExpectedCalibrationError(Evaluator):
    name = "ece"
    description = "expected calibration error (%) of the test predictions, equal-width confidence bins"
    options = (Option("ece_bins", 15, "Confidence bins of the ece evaluator.", parse=int,
                      check=lambda n: None if n >= 1 else "must be at least 1"),)

    def evaluate(self, model, ctx):
        probs = predict(model, ctx.data.test, ctx.data, ctx.device).softmax(1)
        confidence, guess = probs.max(1)
        correct = (guess == ctx.data.test.labels).double()
        bins = ctx.options["ece_bins"]
        which = (confidence * bins).long().clamp_max(bins - 1)
        ece = 0.0
        for b in range(bins):
            inside = which == b
            if inside.any():
                ece += float(inside.double().mean() * (confidence[inside].double().mean() - correct[inside].mean()).abs())
        out = {"ece": round(100 * ece, 4), "bins": bins}
        if ctx.baseline:
            out["ece_delta"] = round(out["ece"] - ctx.baseline["ece"], 4)
        return out


class ValidationAgreement(Method):
    name = "val-agreement"
    description = "keep the candidate whose validation predictions agree most with its parent's"

    def select(self, step, candidates):
        step.finetune_candidates(candidates, step.config.candidate_epochs)
        parent = step.predict(step.parent, step.data.val).argmax(1)
        for cand in candidates:
            agree = (step.predict(cand.model, step.data.val).argmax(1) == parent).double().mean()
            cand.info["val_agreement"] = round(100 * float(agree), 4)  # written to the decision record
        # max() keeps the first of equal scores: candidates come in tie-break order (layer first)
        return max(candidates, key=lambda c: c.info["val_agreement"])


@harness.hookimpl
def register_methods():
    return [ValidationAgreement]


@harness.hookimpl
def register_models():
    from harness_example_plugins.vgg import VGGFamily

    return [VGGFamily]


@harness.hookimpl
def register_structures():
    from harness_example_plugins.vgg import VGGLayers

    return [VGGLayers]


@harness.hookimpl
def register_datasets():
    from harness_example_plugins.shapes import Shapes

    return [Shapes]


@harness.hookimpl
def register_criteria():
    return [L2Norm]


@harness.hookimpl
def register_similarities():
    return [RSA]


@harness.hookimpl
def register_evaluators():
    return [ExpectedCalibrationError]
