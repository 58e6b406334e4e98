import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import pdist, squareform

from harness import registry
from harness.errors import HarnessError
from harness.testing import check_similarity
from harness_plugins.similarity import (SIGMA_OPTION, RbfCKA, bures_wasserstein_distance,
                                        bures_wasserstein_similarity, debiased_cka, linear_cka,
                                        procrustes_similarity, rbf_cka)

METRICS = sorted(registry.registry("similarity"))
# metrics whose docstrings claim invariance to translating either representation
TRANSLATION_INVARIANT = ["cka", "rbf-cka", "debiased-cka", "procrustes", "bures-wasserstein"]


def randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def random_orthogonal(g, size):
    q, _ = torch.linalg.qr(randn(g, size, size))
    return q


def hsic_cka(x, y):
    """CKA from the paper's equations: HSIC with linear kernels and the centring matrix H."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return torch.trace(a @ h @ b @ h) / (n - 1) ** 2

    return float(hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_)))


@pytest.fixture
def xy():
    g = torch.Generator().manual_seed(0)
    x = randn(g, 100, 20)
    y = x @ randn(g, 20, 30) + 0.5 * randn(g, 100, 30)
    return x, y


@pytest.fixture
def wide_xy():
    """x is n x 20 and y n x 35 (a noisy linear map of x), as two layers of different widths give."""
    g = torch.Generator().manual_seed(3)
    x = randn(g, 100, 20)
    y = x @ randn(g, 20, 35) + 0.5 * randn(g, 100, 35)
    return x, y


# ---------------------------------------------------------------- linear CKA
def test_matches_direct_hsic_computation(xy):
    x, y = xy
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-9)


def test_identical_inputs_give_one(xy):
    assert linear_cka(xy[0], xy[0]) == pytest.approx(1.0, abs=1e-12)


def test_invariant_to_orthogonal_transform(xy):
    x, y = xy
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    assert linear_cka(x, y @ q) == pytest.approx(linear_cka(x, y), rel=1e-9)


def test_invariant_to_isotropic_scaling(xy):
    x, y = xy
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(linear_cka(x, y), rel=1e-9)


def test_not_invariant_to_anisotropic_scaling(xy):
    x, y = xy
    scale = torch.linspace(0.01, 10, 30)
    assert abs(linear_cka(x, y * scale) - linear_cka(x, y)) > 1e-3


def test_unrelated_representations_score_low():
    g = torch.Generator().manual_seed(2)
    assert linear_cka(torch.randn(2000, 5, generator=g), torch.randn(2000, 5, generator=g)) < 0.05


def test_registered_as_similarity_plugin(xy):
    metric = registry.get("similarity", "cka")
    assert metric(*xy) == pytest.approx(linear_cka(*xy))


# ---------------------------------------------------------------- every registered metric
def test_builtin_metrics_are_registered():
    assert set(TRANSLATION_INVARIANT) <= set(METRICS)


@pytest.fixture(params=METRICS)
def metric(request):
    return registry.get("similarity", request.param)


def test_every_registered_metric_passes_the_conformance_kit(metric):
    """Maximum on identical inputs, invariance to orthogonal transforms and isotropic scaling,
    related above unrelated, float32 as float64, one-line refusal of mismatched inputs: the
    checks of harness.testing, which plugin authors run on their own metrics."""
    assert check_similarity(metric) == []


@pytest.mark.parametrize("name", TRANSLATION_INVARIANT)
def test_invariant_to_translation_of_either_input(name, wide_xy):
    metric = registry.get("similarity", name)
    x, y = wide_xy
    g = torch.Generator().manual_seed(5)
    shifted = metric(x + 10 * randn(g, 1, 20), y - 10 * randn(g, 1, 35))
    assert shifted == pytest.approx(metric(x, y), abs=1e-8)


# ---------------------------------------------------------------- RBF CKA
def direct_rbf_cka(x, y, fraction):
    """RBF CKA from the definitions: kernel matrices with bandwidth fraction x median
    pairwise distance, HSIC = tr(KHLH) / (n-1)^2 with the centring matrix H."""
    x, y = x.numpy(), y.numpy()
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n

    def kernel(a):
        dist = pdist(a)
        sigma = fraction * np.median(dist)
        return np.exp(-squareform(dist) ** 2 / (2 * sigma ** 2))

    def hsic(k, l_):
        return np.trace(k @ h @ l_ @ h) / (n - 1) ** 2

    k, l_ = kernel(x), kernel(y)
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
def test_rbf_cka_matches_direct_kernel_computation(fraction):
    g = torch.Generator().manual_seed(7)
    x = randn(g, 51, 10)  # 51 inputs: an odd number of pairs, so the median is one distance
    y = torch.tanh(x @ randn(g, 10, 15)) + 0.3 * randn(g, 51, 15)
    assert rbf_cka(x, y, fraction) == pytest.approx(direct_rbf_cka(x, y, fraction), rel=1e-9)
    assert RbfCKA(fraction)(x, y) == pytest.approx(direct_rbf_cka(x, y, fraction), rel=1e-9)


def test_rbf_cka_bandwidth_changes_the_value(wide_xy):
    assert abs(rbf_cka(*wide_xy, 0.2) - rbf_cka(*wide_xy, 0.8)) > 1e-3


def test_rbf_cka_option_is_declared_and_configures_the_metric(wide_xy):
    assert registry.all_options()["rbf_cka_sigma"] is SIGMA_OPTION
    assert SIGMA_OPTION.default == 0.5 and SIGMA_OPTION.parse("0.3") == 0.3
    metric = RbfCKA()
    metric.configure({"rbf_cka_sigma": 0.25})
    assert metric.sigma_fraction == 0.25
    assert metric(*wide_xy) == pytest.approx(rbf_cka(*wide_xy, 0.25), rel=1e-12)
    metric.configure({})
    assert metric.sigma_fraction == SIGMA_OPTION.default


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), True, "0.5"])
def test_rbf_cka_rejects_impossible_bandwidths(bad):
    assert "positive number" in SIGMA_OPTION.check(bad)
    with pytest.raises(HarnessError, match="--rbf-cka-sigma"):
        RbfCKA(bad)
    with pytest.raises(HarnessError, match="--rbf-cka-sigma"):
        RbfCKA().configure({"rbf_cka_sigma": bad})


@pytest.mark.parametrize("good", [0.2, 1, 2.5])
def test_rbf_cka_accepts_positive_bandwidths(good):
    assert SIGMA_OPTION.check(good) is None


def test_rbf_cka_of_a_collapsed_representation_is_zero(wide_xy):
    x, y = wide_xy
    assert rbf_cka(x, torch.ones_like(y)) == 0.0


# ---------------------------------------------------------------- debiased CKA
def unbiased_hsic_song(k, l_):
    """Song et al. (2012), eq. 5: with zero-diagonal K~ and L~,
    [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))."""
    n = k.shape[0]
    k, l_ = k.copy(), l_.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l_, 0)
    one = np.ones(n)
    return (np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ k @ l_ @ one) / (n * (n - 3))


def unbiased_hsic_u_statistic(k, l_):
    """The U-statistic that Song et al.'s estimator equals: the mean over ordered 4-tuples of
    distinct inputs (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    i, j, q, r = np.array(list(itertools.permutations(range(k.shape[0]), 4))).T
    return np.mean(k[i, j] * l_[i, j] + k[i, j] * l_[q, r] - 2 * k[i, j] * l_[i, q])


def cka_from(hsic, x, y):
    k, l_ = x @ x.T, y @ y.T
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_debiased_cka_matches_song_formula():
    g = torch.Generator().manual_seed(8)
    x = randn(g, 60, 12)
    y = x @ randn(g, 12, 25) + randn(g, 60, 25)
    assert debiased_cka(x, y) == pytest.approx(cka_from(unbiased_hsic_song, x.numpy(), y.numpy()), rel=1e-9)


def test_debiased_cka_matches_the_u_statistic_by_enumeration():
    g = torch.Generator().manual_seed(9)
    x = randn(g, 8, 3)
    y = x @ randn(g, 3, 4) + 0.5 * randn(g, 8, 4)
    expected = cka_from(unbiased_hsic_u_statistic, x.numpy(), y.numpy())
    assert debiased_cka(x, y) == pytest.approx(expected, rel=1e-9)


def test_debiased_cka_removes_the_small_sample_bias():
    """With few inputs and many features plain CKA of unrelated data is far above 0; the
    debiased estimate stays near 0 and takes both signs."""
    g = torch.Generator().manual_seed(10)
    values = []
    for _ in range(8):
        x, y = randn(g, 40, 60), randn(g, 40, 60)
        assert linear_cka(x, y) > 0.5
        values.append(debiased_cka(x, y))
    assert max(abs(v) for v in values) < 0.1
    assert abs(sum(values) / len(values)) < 0.02
    assert min(values) < 0 < max(values)


def test_debiased_cka_needs_four_inputs():
    with pytest.raises(HarnessError, match="at least 4 inputs"):
        debiased_cka(torch.randn(3, 5), torch.randn(3, 5))


# ---------------------------------------------------------------- Procrustes
def standardised_padded(a, width):
    """Centred, unit Frobenius norm, zero-padded to ``width`` columns (numpy)."""
    a = a.numpy() - a.numpy().mean(0)
    a = a / np.linalg.norm(a)
    return np.pad(a, ((0, 0), (0, width - a.shape[1])))


def direct_procrustes_angle(x, y):
    """arccos <X, YR> with R from scipy's orthogonal Procrustes solver."""
    width = max(x.shape[1], y.shape[1])
    xs, ys = standardised_padded(x, width), standardised_padded(y, width)
    rotation, _ = scipy.linalg.orthogonal_procrustes(ys, xs)
    return np.arccos(np.clip(np.sum(xs * (ys @ rotation)), -1, 1))


@pytest.mark.parametrize("n, p, q", [(100, 20, 35), (30, 50, 40)])
def test_procrustes_matches_scipy_orthogonal_procrustes(n, p, q):
    g = torch.Generator().manual_seed(11)
    x = randn(g, n, p)
    y = x @ randn(g, p, q) + 2 * randn(g, n, q)
    expected = 1 - direct_procrustes_angle(x, y) / (math.pi / 2)
    assert procrustes_similarity(x, y) == pytest.approx(expected, abs=1e-9)
    assert 0.1 < expected < 0.9  # a case away from both ends


def test_procrustes_of_orthogonal_shapes_is_zero():
    g = torch.Generator().manual_seed(12)
    z = randn(g, 50, 10)
    z, _ = torch.linalg.qr(z - z.mean(0))  # centred, mutually orthogonal columns
    assert procrustes_similarity(z[:, :4], z[:, 4:]) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- Bures-Wasserstein
def centred_orthogonal_columns(g, n, p):
    """n x p with centred, orthogonal columns of squared norm n: sample covariance I."""
    z = randn(g, n, p)
    q, _ = torch.linalg.qr(z - z.mean(0))
    return q * math.sqrt(n)


@pytest.mark.parametrize("rotate", [False, True])
def test_bures_wasserstein_matches_closed_form_for_diagonal_covariances(rotate):
    """Samples with covariances diag(a) and diag(b) on shared axes: after normalising to unit
    total variance, W2^2 = sum (sqrt(a_i / sum a) - sqrt(b_i / sum b))^2. Rotating y must not
    change it: the alignment undoes the rotation."""
    g = torch.Generator().manual_seed(13)
    a = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    b = torch.tensor([1.0, 3.0, 0.2, 0.5, 2.0], dtype=torch.float64)
    z = centred_orthogonal_columns(g, 200, 5)
    x, y = z * a.sqrt(), z * b.sqrt()
    if rotate:
        y = y @ random_orthogonal(g, 5)
    expected = float(((a / a.sum()).sqrt() - (b / b.sum()).sqrt()).square().sum().sqrt())
    assert bures_wasserstein_distance(x, y) == pytest.approx(expected, rel=1e-9)
    assert bures_wasserstein_similarity(x, y) == pytest.approx(1 - expected / math.sqrt(2), rel=1e-9)


def psd_sqrt(s):
    eigenvalues, vectors = np.linalg.eigh(s)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ vectors.T


def direct_bures_wasserstein(x, y, sqrtm):
    """W2 between N(0, X'X) and N(0, R'Y'YR) in the full padded feature space, with R from
    scipy's orthogonal Procrustes solver."""
    width = max(x.shape[1], y.shape[1])
    xs, ys = standardised_padded(x, width), standardised_padded(y, width)
    rotation, _ = scipy.linalg.orthogonal_procrustes(ys, xs)
    sx, sy = xs.T @ xs, (ys @ rotation).T @ (ys @ rotation)
    root = sqrtm(sx)
    w2_squared = np.trace(sx) + np.trace(sy) - 2 * np.trace(sqrtm(root @ sy @ root)).real
    return math.sqrt(max(w2_squared, 0.0))


def test_bures_wasserstein_matches_scipy_sqrtm_for_full_rank_covariances():
    g = torch.Generator().manual_seed(14)
    x = randn(g, 80, 15) * torch.logspace(0, -1, 15, dtype=torch.float64)
    y = x @ randn(g, 15, 15) + randn(g, 80, 15)
    expected = direct_bures_wasserstein(x, y, scipy.linalg.sqrtm)
    assert bures_wasserstein_distance(x, y) == pytest.approx(expected, rel=1e-8)
    assert 0.1 < expected < math.sqrt(2) - 0.1


@pytest.mark.parametrize("n, p, q", [(100, 20, 35), (30, 50, 40)])
def test_bures_wasserstein_matches_full_space_computation_for_any_widths(n, p, q):
    """Padding and, for more features than inputs, working with n x n factors, give the
    same distance as the computation in the full padded feature space."""
    g = torch.Generator().manual_seed(15)
    x = randn(g, n, p)
    y = x @ randn(g, p, q) + randn(g, n, q)
    expected = direct_bures_wasserstein(x, y, psd_sqrt)
    # rank-deficient covariances: each zero eigenvalue, off by round-off e, adds sqrt(e) ~ 1e-8
    assert bures_wasserstein_distance(x, y) == pytest.approx(expected, abs=1e-6)


def test_bures_wasserstein_uses_the_pairing_of_inputs():
    """The same distribution with shuffled rows is further away than the original: the
    alignment is computed from the pairing, not from the covariances alone."""
    g = torch.Generator().manual_seed(16)
    x = randn(g, 200, 10) * torch.logspace(0, -1, 10, dtype=torch.float64)
    y = x @ random_orthogonal(g, 10)
    shuffled = y[torch.randperm(200, generator=g)]
    assert bures_wasserstein_distance(x, y) == pytest.approx(0.0, abs=1e-6)
    assert bures_wasserstein_distance(x, shuffled) > 0.1
