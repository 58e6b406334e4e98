"""The example plugins checked with prunebench's conformance kit, as any plugin package can."""

from harness.testing import check_criterion, check_evaluator, check_similarity, check_structure
from harness_example_plugins import RSA, ExpectedCalibrationError, L2Norm


def test_rsa_is_a_similarity_metric():
    assert check_similarity(RSA()) == []


def test_l2_norm_is_a_criterion():
    assert check_criterion(L2Norm()) == []


def test_ece_is_an_evaluator():
    assert check_evaluator(ExpectedCalibrationError()) == []


def test_vgg_layer_and_the_builtin_filter_structure_conform_on_example_vgg():
    from harness import plugins
    from harness_example_plugins.vgg import VGGFamily, VGGLayers

    family = VGGFamily()
    model = family.build(family.default_arch("example-vgg", 10, (3, 32, 32))).eval()
    assert check_structure(VGGLayers(), model) == []
    assert check_structure(plugins.get("structure", "resnet-filter"), model) == []
    assert not plugins.get("structure", "resnet-block").supports(model)  # no residual block: not its business


def test_removing_a_vgg_layer_equals_ablating_it():
    import torch

    from harness_example_plugins.vgg import VGGFamily, VGGLayers

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
