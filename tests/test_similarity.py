import pytest
import torch

from harness import plugins
from harness_plugins.similarity import linear_cka


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
    x = torch.randn(100, 20, generator=g, dtype=torch.float64)
    y = x @ torch.randn(20, 30, generator=g, dtype=torch.float64) + 0.5 * torch.randn(100, 30, generator=g, dtype=torch.float64)
    return x, y


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
    metric = plugins.get("similarity", "cka")
    assert metric(*xy) == pytest.approx(linear_cka(*xy))
