import pytest
import torch

from conftest import seeded_resnet
from harness import registry
from harness.measure import count_flops, count_parameters
from harness.models import load_model, save_model

LAYER = registry.get("structure", "resnet-block")
FILTER = registry.get("structure", "resnet-filter")
X = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def analytic_flops(model, hw=32):
    """2 * multiply-adds of every convolution and the classifier, from the shapes alone."""
    total, size = 0, hw
    convs = [(model.conv1, hw)]
    for _, block in model.blocks():
        size = size // block.stride
        convs += [(block.conv1, size), (block.conv2, size)]
    for conv, s in convs:
        total += 2 * conv.in_channels * conv.out_channels * 9 * s * s
    return total + 2 * model.linear.in_features * model.linear.out_features


def test_flop_count_matches_shapes_and_literature():
    model = seeded_resnet("resnet20")
    assert count_flops(model, (3, 32, 32)) == analytic_flops(model)
    # He et al.'s ResNet-20 is 40.55M multiply-adds; torch's counter reports 2 FLOPs each
    assert count_flops(model, (3, 32, 32)) == pytest.approx(2 * 40.55e6, rel=0.002)
    assert count_parameters(model) == 269722


def test_only_blocks_with_identity_shortcuts_are_layer_units():
    model = seeded_resnet("resnet20")
    sites = [u.site for u in LAYER.units(model)]
    assert sites == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]
    with pytest.raises(ValueError):
        LAYER.remove(model, [type(LAYER.units(model)[0])("layer", "layer2.0")])


@pytest.mark.parametrize("site", ["layer1.0", "layer2.2", "layer3.1"])
def test_removing_a_block_equals_ablating_it(site):
    model = seeded_resnet("resnet20")
    unit = next(u for u in LAYER.units(model) if u.site == site)
    before = model(X)
    with LAYER.ablate(model, [unit]):
        ablated = model(X)
    assert torch.equal(model(X), before), "ablation must be undone"
    pruned = LAYER.remove(model, [unit]).eval()
    assert torch.allclose(pruned(X), ablated, atol=1e-5)
    assert not torch.allclose(pruned(X), before, atol=1e-3)
    assert len(pruned.blocks()) == len(model.blocks()) - 1
    block = dict(model.blocks())[site]
    assert count_parameters(pruned) == count_parameters(model) - sum(p.numel() for p in block.parameters())
    assert count_flops(pruned, (3, 32, 32)) == analytic_flops(pruned) < analytic_flops(model)


def test_removing_filters_equals_ablating_them_and_shrinks_convolutions():
    model = seeded_resnet("resnet20")
    units = [u for u in FILTER.units(model) if (u.site, u.index) in
             {("layer1.1.conv1", 0), ("layer1.1.conv1", 5), ("layer2.0.conv1", 31), ("layer3.2.conv1", 7),
              ("layer3.2.conv1", 8)}]
    with FILTER.ablate(model, units):
        ablated = model(X)
    pruned = FILTER.remove(model, units).eval()
    assert torch.allclose(pruned(X), ablated, atol=1e-5)
    blocks = dict(pruned.blocks())
    assert blocks["layer1.1"].conv1.out_channels == 14 and blocks["layer1.1"].conv2.in_channels == 14
    assert blocks["layer2.0"].conv1.weight.shape == (31, 16, 3, 3)
    assert blocks["layer3.2"].bn1.running_mean.shape == (62,)
    assert count_flops(pruned, (3, 32, 32)) == analytic_flops(pruned) < analytic_flops(model)
    assert dict(model.blocks())["layer1.1"].conv1.out_channels == 16, "the parent is left untouched"


def test_a_block_keeps_at_least_one_filter():
    model = seeded_resnet("resnet20")
    units = [u for u in FILTER.units(model) if u.site == "layer1.0.conv1"]
    with pytest.raises(ValueError):
        FILTER.remove(model, units)
    pruned = FILTER.remove(model, units[:-1])
    assert dict(pruned.blocks())["layer1.0"].conv1.out_channels == 1
    assert all(u.site != "layer1.0.conv1" for u in FILTER.units(pruned))


def test_pruned_model_reloads_from_weights_only_file(tmp_path):
    model = seeded_resnet("resnet20")
    pruned = LAYER.remove(model, LAYER.units(model)[:2])
    pruned = FILTER.remove(pruned, FILTER.units(pruned)[::5]).eval()
    path = tmp_path / "m.pt"
    save_model(pruned, path)
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"arch", "state_dict"}
    reloaded = load_model(path)
    assert reloaded.arch == pruned.arch
    assert torch.equal(reloaded(X), pruned(X))
    save_model(model, tmp_path / "parent.pt")
    assert path.stat().st_size < (tmp_path / "parent.pt").stat().st_size
