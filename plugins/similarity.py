"""Representation similarity metrics (higher = more similar).

Each metric compares x (n x p) and y (n x q), the features of the same n inputs in the
same order; p and q may differ. Everything is computed in float64 on the inputs' device.
Every metric here is invariant to translation, to isotropic scaling and to orthogonal
transforms of either representation, and gives ``maximum`` (1) for identical inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness import hookimpl
from harness.api import Option, Similarity
from harness.errors import HarnessError


def _centred_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both representations as float64 matrices (one row per input) with centred columns."""
    x, y = Similarity.matrices(x, y)
    return x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)


def _unit_norm(x: torch.Tensor) -> torch.Tensor | None:
    """x scaled to unit Frobenius norm, or None for a constant (all-zero) representation."""
    norm = torch.linalg.matrix_norm(x)
    return None if norm == 0 else x / norm


def _narrowed(x: torch.Tensor) -> torch.Tensor:
    """An n x min(n, p) matrix with the same Gram matrix x x^T as x (n x p). For p > n it is
    R^T from the QR factorisation x^T = QR, so x = R^T Q^T: x up to an orthogonal map of
    its features. Metrics invariant to such maps may use it to keep their matrices n x n
    at most (wide layers have p up to thousands)."""
    n, p = x.shape
    if p <= n:
        return x
    return torch.linalg.qr(x.T).R.T


def _sym_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix through its eigenvectors;
    round-off can make tiny eigenvalues negative, so they are clamped to 0."""
    eigenvalues, vectors = torch.linalg.eigh(s)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


# ---------------------------------------------------------------- linear CKA
def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019): HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with
    linear kernels, computed in feature space as ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) on
    column-centred X (n x p) and Y (n x q). In [0, 1], higher = more similar, 1 for
    identical inputs; invariant to translation, orthogonal transforms and isotropic
    scaling; p and q may differ. A constant representation gives 0."""
    x, y = _centred_pair(x, y)
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


# ---------------------------------------------------------------- RBF CKA
def _sigma_fraction_problem(value) -> str | None:
    """Why ``value`` cannot be an RBF bandwidth fraction, or None when it can."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return "must be a positive number (a fraction of the median pairwise distance, typically 0.2 to 0.8)"
    return None


SIGMA_OPTION = Option(
    "rbf_cka_sigma", 0.5,
    "bandwidth of the rbf-cka similarity's Gaussian kernels, as a fraction of the median "
    "pairwise distance between inputs (Kornblith et al. 2019 use 0.2 to 0.8)",
    parse=float, check=_sigma_fraction_problem,
)


def _rbf_gram(x: torch.Tensor, sigma_fraction: float) -> torch.Tensor | None:
    """Gaussian kernel matrix exp(-|x_i - x_j|^2 / (2 sigma^2)) with sigma = sigma_fraction
    times the (lower) median distance between distinct inputs; None when that median is 0
    (most inputs at one point), where no bandwidth fits."""
    sq_dist = torch.cdist(x, x).square()
    n = x.shape[0]
    pairs = torch.triu_indices(n, n, offset=1, device=x.device)
    median_sq = sq_dist[pairs[0], pairs[1]].median()
    if median_sq == 0:
        return None
    return torch.exp(-sq_dist / (2 * sigma_fraction ** 2 * median_sq))


def _double_centred(k: torch.Tensor) -> torch.Tensor:
    """H K H with the centring matrix H = I - 11'/n."""
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def rbf_cka(x: torch.Tensor, y: torch.Tensor, sigma_fraction: float = 0.5) -> float:
    """CKA with Gaussian (RBF) kernels (Kornblith et al. 2019):
    <HKH, HLH>_F / (||HKH||_F ||HLH||_F), i.e. HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),
    each kernel's bandwidth set from its own representation's median pairwise distance.
    In [0, 1] (both centred kernels are positive semi-definite), higher = more similar, 1
    for identical inputs. Depends only on pairwise distances relative to their median,
    hence invariant to translation, orthogonal transforms and isotropic scaling. A
    representation without a usable bandwidth (constant, or most inputs equal) gives 0."""
    x, y = _centred_pair(x, y)
    k, l_ = _rbf_gram(x, sigma_fraction), _rbf_gram(y, sigma_fraction)
    if k is None or l_ is None:
        return 0.0
    k, l_ = _double_centred(k), _double_centred(l_)
    denom = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l_)
    if denom == 0:
        return 0.0
    return float((k * l_).sum() / denom)


class RbfCKA(Similarity):
    """RBF-kernel CKA; the bandwidth fraction comes from the ``rbf_cka_sigma`` option
    (through :meth:`configure`) or the constructor."""

    name = "rbf-cka"
    description = ("CKA with Gaussian kernels (Kornblith et al. 2019), bandwidth --rbf-cka-sigma x median "
                   "distance; in [0, 1], higher = more similar")
    options = (SIGMA_OPTION,)

    def __init__(self, sigma_fraction: float = SIGMA_OPTION.default):
        self.sigma_fraction = self._checked(sigma_fraction)

    @staticmethod
    def _checked(value) -> float:
        problem = _sigma_fraction_problem(value)
        if problem:
            raise HarnessError(f"{SIGMA_OPTION.flag} {value!r}: {problem}")
        return float(value)

    def configure(self, options: dict) -> None:
        """Take the bandwidth fraction from a run's resolved plugin options."""
        self.sigma_fraction = self._checked(options.get(SIGMA_OPTION.name, SIGMA_OPTION.default))

    def __call__(self, x, y):
        return rbf_cka(x, y, self.sigma_fraction)


# ---------------------------------------------------------------- debiased CKA
def _u_centred_gram(x: torch.Tensor) -> torch.Tensor:
    """The U-centred linear Gram matrix (Szekely & Rizzo 2014): with A = XX' and a zero
    diagonal, A_ij - rowsum_i/(n-2) - colsum_j/(n-2) + total/((n-1)(n-2)) off the diagonal
    and 0 on it. Its inner product with another, divided by n(n-3), is the unbiased HSIC
    estimator of Song et al. (2012)."""
    n = x.shape[0]
    a = x @ x.T
    a.fill_diagonal_(0)
    sums = a.sum(0) / (n - 2)
    u = a - sums[:, None] - sums[None, :] + a.sum() / ((n - 1) * (n - 2))
    u.fill_diagonal_(0)
    return u


def debiased_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Debiased linear CKA (Kornblith et al. 2019, Nguyen et al. 2021): linear CKA with
    each HSIC replaced by the unbiased estimator of Song et al. (2012), which removes the
    bias of plain CKA towards high values when n is small relative to p and q. Computed as
    the cosine between U-centred Gram matrices, so it lies in [-1, 1]: unrelated
    representations give values near 0, slightly negative ones included; no mapping is
    needed, higher = more similar, 1 for identical inputs. Invariant to translation
    (U-centring removes it exactly), orthogonal transforms and isotropic scaling. Needs at
    least 4 inputs; a constant representation gives 0."""
    x, y = _centred_pair(x, y)  # the estimator ignores translation; centring avoids cancellation
    if x.shape[0] < 4:
        raise HarnessError(f"debiased-cka needs at least 4 inputs; got {x.shape[0]}")
    k, l_ = _u_centred_gram(x), _u_centred_gram(y)
    denom = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l_)
    if denom == 0:
        return 0.0
    return float((k * l_).sum() / denom)


class DebiasedCKA(Similarity):
    name = "debiased-cka"
    description = ("linear CKA with unbiased HSIC (Song et al. 2012); in [-1, 1], about 0 for unrelated "
                   "representations, higher = more similar")

    def __call__(self, x, y):
        return debiased_cka(x, y)


# ---------------------------------------------------------------- Procrustes
def procrustes_angle(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Angular Procrustes shape distance (Williams et al. 2021) in [0, pi/2]: with centred
    columns, unit Frobenius norms and the narrower matrix zero-padded to the wider width,
    arccos of the largest <X, YQ>_F over orthogonal Q, which is the nuclear norm of X'Y.
    Zero-padding leaves the singular values of X'Y unchanged, so none is done. None for a
    constant representation (no shape)."""
    x, y = _centred_pair(x, y)
    x, y = _unit_norm(x), _unit_norm(y)
    if x is None or y is None:
        return None
    nuclear = torch.linalg.svdvals(_narrowed(x).T @ _narrowed(y)).sum()
    # |<X, YQ>| <= |X| |Y| = 1; round-off may exceed it slightly
    return float(torch.arccos(nuclear.clamp(max=1.0)))


def procrustes_similarity(x: torch.Tensor, y: torch.Tensor) -> float:
    """1 - d / (pi/2) for the angular Procrustes distance d: in [0, 1], higher = more
    similar, 1 for identical inputs, 0 for orthogonal shapes or a constant representation.
    Invariant to translation, orthogonal transforms and isotropic scaling, but not to
    other invertible linear maps (unlike CCA-based metrics)."""
    angle = procrustes_angle(x, y)
    return 0.0 if angle is None else 1.0 - angle / (math.pi / 2)


class ProcrustesShape(Similarity):
    name = "procrustes"
    description = ("1 - d/(pi/2) for the angular Procrustes shape distance d (Williams et al. 2021); "
                   "in [0, 1], higher = more similar")

    def __call__(self, x, y):
        return procrustes_similarity(x, y)


# ---------------------------------------------------------------- Bures-Wasserstein
def bures_wasserstein_distance(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """2-Wasserstein distance between Gaussian fits of two aligned representations, in
    [0, sqrt(2)]; None for a constant representation.

    Each representation is centred (so the mean term |mu_x - mu_y|^2 of W2 is 0) and
    scaled to unit total variance, its covariance becoming S = X'X with |X|_F = 1. Then
    W2^2 = tr Sx + tr Sy - 2 tr (Sx^1/2 Sy Sx^1/2)^1/2 = 2 - 2 tr (Sx^1/2 Sy Sx^1/2)^1/2,
    at most 2 because that trace is non-negative.

    Why Y is aligned first: W2 compares covariances axis by axis, but the feature axes of
    two networks (or layers) are arbitrary (permuting or rotating units changes nothing
    the network computes) and need not even have the same number, so W2 between raw fits
    is meaningless. Minimising W2 over rotations of Y instead would compare only the two
    covariance spectra, and two unrelated representations with equal spectra would look
    identical. So Y (zero-padded to X's width, or X to Y's) is rotated by the orthogonal
    Procrustes solution R = argmin |X - YR|_F, computed from the pairing of rows (both are
    features of the same inputs), and W2 then compares X's fit with that of YR. This keeps
    W2 invariant to orthogonal transforms of either input. Where X'Y has lower rank than
    Y, R is not unique on the directions of Y that X'Y does not see, and the SVD's choice
    is used.

    Both inputs are first replaced by their n x min(n, p) factors (:func:`_narrowed`),
    which the result is invariant to, so no matrix here is larger than n x n."""
    x, y = _centred_pair(x, y)
    x, y = _unit_norm(x), _unit_norm(y)
    if x is None or y is None:
        return None
    x, y = _narrowed(x), _narrowed(y)
    width = max(x.shape[1], y.shape[1])
    x = F.pad(x, (0, width - x.shape[1]))
    y = F.pad(y, (0, width - y.shape[1]))
    u, _, vh = torch.linalg.svd(y.T @ x)
    y = y @ (u @ vh)
    root_x = _sym_sqrt(x.T @ x)
    middle = root_x @ (y.T @ y) @ root_x
    fidelity = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    return float((2 - 2 * fidelity).clamp(min=0).sqrt())


def bures_wasserstein_similarity(x: torch.Tensor, y: torch.Tensor) -> float:
    """1 - W2 / sqrt(2), with W2 the aligned Gaussian 2-Wasserstein distance of
    :func:`bures_wasserstein_distance` and sqrt(2) its bound under unit total variance:
    in [0, 1], higher = more similar, 1 for identical inputs (and for any two whose
    aligned covariances agree), 0 for a constant representation. Invariant to
    translation, orthogonal transforms and isotropic scaling."""
    distance = bures_wasserstein_distance(x, y)
    return 0.0 if distance is None else 1.0 - distance / math.sqrt(2)


class BuresWasserstein(Similarity):
    name = "bures-wasserstein"
    description = ("1 - W2/sqrt(2) for the 2-Wasserstein distance between Gaussian fits, centred, unit "
                   "total variance, Procrustes-aligned (after Duong et al. 2023); in [0, 1], higher = more similar")

    def __call__(self, x, y):
        return bures_wasserstein_similarity(x, y)


@hookimpl
def register_similarities():
    return [LinearCKA, RbfCKA, DebiasedCKA, ProcrustesShape, BuresWasserstein]
