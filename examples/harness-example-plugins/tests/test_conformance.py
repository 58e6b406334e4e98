"""The example plugins checked with prunebench's conformance kit, as any plugin package can."""

from harness.testing import check_criterion, check_evaluator, check_similarity
from harness_example_plugins import RSA, ExpectedCalibrationError, L2Norm


def test_rsa_is_a_similarity_metric():
    assert check_similarity(RSA()) == []


def test_l2_norm_is_a_criterion():
    assert check_criterion(L2Norm()) == []


def test_ece_is_an_evaluator():
    assert check_evaluator(ExpectedCalibrationError()) == []
