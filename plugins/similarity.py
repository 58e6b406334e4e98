"""Representation similarity metrics (higher = more similar)."""

from __future__ import annotations

import torch

from harness import hookimpl
from harness.api import Similarity


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019): HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with
    linear kernels, computed in feature space as ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) on
    column-centred X (n x p) and Y (n x q). 1 for identical inputs; invariant to
    orthogonal transforms and isotropic scaling; p and q may differ."""
    x = x.double().flatten(1)
    y = y.double().flatten(1)
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    denom = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if denom == 0:
        return 0.0
    return float(cross / denom)


class LinearCKA(Similarity):
    name = "cka"
    description = "linear CKA (Kornblith et al. 2019) in [0, 1]; higher = more similar"

    def __call__(self, x, y):
        return linear_cka(x, y)


@hookimpl
def register_similarities():
    return [LinearCKA()]
