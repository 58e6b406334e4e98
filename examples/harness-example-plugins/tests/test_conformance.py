"""The example plugins checked with prunebench's conformance kit, as any plugin package can:
from Python (harness.testing) and, once installed, with `harness check-plugin` for each kind."""

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.testing import (check_criterion, check_dataset, check_evaluator, check_method, check_model_family,
                             check_similarity, check_structure, plugin)
from harness_example_plugins import RSA, ExpectedCalibrationError, L2Norm, ValidationAgreement
from harness_example_plugins.shapes import Shapes
from harness_example_plugins.vgg import VGGFamily, VGGLayers


@pytest.mark.parametrize("kind, name", [("model", "example-vgg"), ("dataset", "example-shapes"),
                                        ("structure", "vgg-layer"), ("criterion", "l2-norm"),
                                        ("similarity", "rsa"), ("method", "val-agreement"), ("evaluator", "ece")])
def test_each_plugin_passes_harness_check_plugin(kind, name):
    result = CliRunner().invoke(main, ["check-plugin", kind, name])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ok {kind} {name} (harness-example-plugins 0.1.0): conforms"


def test_rsa_is_a_similarity_metric():
    assert check_similarity(RSA()) == []


def test_l2_norm_is_a_criterion():
    assert check_criterion(L2Norm()) == []


def test_ece_is_an_evaluator():
    assert check_evaluator(ExpectedCalibrationError()) == []


def test_val_agreement_is_a_method():
    assert check_method(ValidationAgreement()) == []


def test_example_vgg_is_a_model_family():
    assert check_model_family(VGGFamily()) == []


def test_example_shapes_is_a_data_set(tmp_path):
    assert check_dataset(Shapes(), cache_dir=str(tmp_path)) == []


def test_vgg_layer_and_the_builtin_filter_structure_conform_on_example_vgg():
    family = VGGFamily()
    model = family.build(family.default_arch("example-vgg", 10, (3, 32, 32))).eval()
    assert check_structure(VGGLayers(), model) == []
    assert check_structure(plugin("structure", "resnet-filter"), model) == []
    assert not plugin("structure", "resnet-block").supports(model)  # no residual block: not its business


def test_removing_a_vgg_layer_equals_ablating_it():
    import torch

    family, layers = VGGFamily(), VGGLayers()
    model = family.build(family.default_arch("example-vgg", 10, (3, 32, 32))).eval()
    with torch.no_grad():  # statistics that are not the identity, or ablation would be trivial
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3), m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    unit = layers.units(model)[1]
    with layers.ablate(model, [unit]):
        ablated = model(x)
    pruned = layers.remove(model, [unit]).eval()
    assert torch.allclose(pruned(x), ablated, atol=1e-5)
