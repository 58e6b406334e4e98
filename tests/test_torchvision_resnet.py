"""torchvision's ResNets as the family ``torchvision:``: the spec reproduces torchvision's
networks, the layer and filter structures prune them exactly, pruned models reload, and
plain torchvision checkpoints and ImageNet weights load."""

import pytest
import torch
import torchvision

from conftest import needs_shared, run_cli, seeded_resnet
from harness import records, registry
from harness.api import CriterionContext, Unit
from harness.errors import HarnessError
from harness.measure import count_flops, count_parameters
from harness.models import create_model, load_model, save_model
from harness_plugins.models import torchvision_resnet
from test_criteria import Opaque

FAMILY = registry.get("model", "torchvision:resnet18")
LAYER = registry.get("structure", "resnet-block")
FILTER = registry.get("structure", "resnet-filter")
KL = registry.get("criterion", "kl")
X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def stem(monkeypatch):
    """Sets --torchvision-stem for one test (the family object lives as long as the process)."""
    return lambda value: monkeypatch.setattr(FAMILY, "stem", value)


def analytic_flops(model, input_shape=(3, 32, 32)):
    """2 * multiply-adds of every convolution (from its weight's shape and its output's
    size) and of the classifier."""
    total = 0

    def count(conv, _, out):
        nonlocal total
        total += 2 * conv.weight.numel() * out.shape[-2] * out.shape[-1]

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    return total + 2 * model.fc.weight.numel()


def units(structure, model, wanted):
    """The units of ``wanted`` {site: indices} (or {site: None} for blocks)."""
    return [u for u in structure.units(model) if u.site in wanted and (u.index is None or u.index in wanted[u.site])]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_the_imagenet_stem_rebuilds_torchvisions_network_exactly(name, stem):
    stem("imagenet")
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, num_classes=10).eval()
    model = create_model(f"torchvision:{name}", 10, (3, 32, 32), "cifar10").eval()
    assert isinstance(model, torchvision.models.ResNet)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    model.load_state_dict(reference.state_dict())
    assert torch.allclose(model(X), reference(X), atol=1e-5)
    assert count_flops(model, (3, 32, 32)) == analytic_flops(model)


def test_stem_auto_is_cifar_below_64_px_and_the_option_checks_its_value(stem):
    small = FAMILY.default_arch("torchvision:resnet18", 10, (3, 32, 32))
    assert small["stem"] == "cifar" and FAMILY.default_arch("torchvision:resnet18", 10, (3, 64, 64))["stem"] == "imagenet"
    model = FAMILY.build(small)
    assert model.conv1.weight.shape == (64, 3, 3, 3) and isinstance(model.maxpool, torch.nn.Identity)
    # ResNet-18 at 32x32 with a CIFAR stem: the commonly cited 0.56 G multiply-adds, 11.17 M parameters
    assert count_flops(model, (3, 32, 32)) == analytic_flops(model) == pytest.approx(2 * 0.556e9, rel=3e-3)
    assert count_parameters(model) == 11173962
    gray = FAMILY.build(FAMILY.default_arch("torchvision:resnet18", 10, (1, 28, 28)))
    assert gray.conv1.in_channels == 1 and gray(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    stem("imagenet")
    assert FAMILY.default_arch("torchvision:resnet18", 10, (3, 32, 32))["stem"] == "imagenet"
    (option,) = FAMILY.options
    assert option.check("cifar") is None and "auto, imagenet, cifar" in option.check("tiny")
    FAMILY.configure({"torchvision_stem": "cifar"})
    assert FAMILY.stem == "cifar"


def test_unknown_variant_is_a_one_line_error_listing_the_valid_names():
    with pytest.raises(HarnessError) as err:
        create_model("torchvision:resnet19", 10, (3, 32, 32), "cifar10")
    message = str(err.value)
    # names close to it, then the rule: any other torchvision network goes to the traced family
    assert "'resnet19'" in message and "torchvision:resnet18" in message and "\n" not in message
    assert "list_models()" in message
    assert registry.get("model", "torchvision:resnet34") is FAMILY


def test_downsampling_blocks_are_not_layer_units():
    r18, r50 = seeded_resnet("torchvision:resnet18"), seeded_resnet("torchvision:resnet50")
    assert [u.site for u in LAYER.units(r18)] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    sites = [u.site for u in LAYER.units(r50)]
    assert len(sites) == 16 - 4 and not any(s.endswith(".0") for s in sites)
    with pytest.raises(ValueError):
        LAYER.remove(r50, [Unit("resnet-block", "layer1.0")])


@pytest.mark.parametrize("name, sites, size", [
    ("resnet18", ["layer1.0"], 32), ("resnet18", ["layer4.1"], 4), ("resnet50", ["layer3.2"], 8),
    ("resnet50", ["layer2.1", "layer2.3"], 16),
])
def test_removing_blocks_equals_ablating_them(name, sites, size):
    """``size``: the blocks' feature-map side at 32x32 input under the CIFAR stem."""
    model = seeded_resnet(f"torchvision:{name}")
    chosen = units(LAYER, model, dict.fromkeys(sites))
    before = model(X)
    with LAYER.ablate(model, chosen):
        ablated = model(X)
    assert torch.equal(model(X), before), "ablation must be undone"
    pruned = LAYER.remove(model, chosen).eval()
    assert torch.allclose(pruned(X), ablated, rtol=1e-4, atol=1e-4 * ablated.abs().max().item())
    assert not torch.allclose(pruned(X), before, rtol=1e-2)
    assert len(pruned.blocks()) == len(model.blocks()) - len(sites)
    assert all(s in dict(model.blocks()) for s in sites), "the parent is left untouched"
    removed = [dict(model.blocks())[s] for s in sites]
    assert count_parameters(model) - count_parameters(pruned) == sum(p.numel() for b in removed for p in b.parameters())
    convs = [m for b in removed for m in b.modules() if isinstance(m, torch.nn.Conv2d)]
    assert count_flops(model, (3, 32, 32)) - count_flops(pruned, (3, 32, 32)) == sum(
        2 * c.weight.numel() * size * size for c in convs)
    assert count_flops(pruned, (3, 32, 32)) == analytic_flops(pruned)


def test_removing_a_whole_stage_of_identity_blocks_leaves_the_stage_empty():
    model = seeded_resnet("torchvision:resnet18")
    chosen = units(LAYER, model, {"layer1.0": None, "layer1.1": None})
    with LAYER.ablate(model, chosen):
        ablated = model(X)
    pruned = LAYER.remove(model, chosen).eval()
    assert len(pruned.layer1) == 0 and pruned.arch["stages"][0]["blocks"] == []
    assert torch.allclose(pruned(X), ablated, rtol=1e-4, atol=1e-4 * ablated.abs().max().item())
    assert [u.site for u in LAYER.units(pruned)] == ["layer2.1", "layer3.1", "layer4.1"]


def test_removing_basic_block_filters_equals_ablating_them_and_shrinks_by_the_shapes():
    model = seeded_resnet("torchvision:resnet18")
    chosen = units(FILTER, model, {"layer2.1.conv1": {0, 5, 9}, "layer4.0.conv1": {1}})
    with FILTER.ablate(model, chosen):
        ablated = model(X)
    pruned = FILTER.remove(model, chosen).eval()
    assert torch.allclose(pruned(X), ablated, rtol=1e-4, atol=1e-4 * ablated.abs().max().item())
    blocks = dict(pruned.blocks())
    assert blocks["layer2.1"].conv1.weight.shape == (125, 128, 3, 3) and blocks["layer2.1"].bn1.num_features == 125
    assert blocks["layer2.1"].conv2.weight.shape == (128, 125, 3, 3)
    assert blocks["layer4.0"].conv1.weight.shape == (511, 256, 3, 3) and blocks["layer4.0"].conv2.in_channels == 511
    assert dict(model.blocks())["layer2.1"].conv1.out_channels == 128, "the parent is left untouched"
    # conv1's filters (and batch-norm weight and bias) and conv2's input channels
    assert count_parameters(model) - count_parameters(pruned) == 3 * (128 * 9 + 2 + 128 * 9) + (256 * 9 + 2 + 512 * 9)
    # layer2 runs at 16x16, layer4 at 4x4 (its first block's conv1 has stride 2)
    flops_drop = 2 * 3 * (128 * 9 + 128 * 9) * 16 * 16 + 2 * (256 * 9 + 512 * 9) * 4 * 4
    assert count_flops(model, (3, 32, 32)) - count_flops(pruned, (3, 32, 32)) == flops_drop
    assert count_flops(pruned, (3, 32, 32)) == analytic_flops(pruned)


def test_removing_both_sites_of_a_bottleneck_equals_ablating_them():
    model = seeded_resnet("torchvision:resnet50")
    assert [s for s, *_ in model.width_sites()][:2] == ["layer1.0.conv1", "layer1.0.conv2"]
    chosen = units(FILTER, model, {"layer1.0.conv1": {0, 3}, "layer1.0.conv2": {0, 3, 7}, "layer3.2.conv2": {4}})
    with FILTER.ablate(model, chosen):
        ablated = model(X)
    pruned = FILTER.remove(model, chosen).eval()
    assert torch.allclose(pruned(X), ablated, rtol=1e-4, atol=1e-4 * ablated.abs().max().item())
    block = dict(pruned.blocks())["layer1.0"]
    assert [c.weight.shape for c in (block.conv1, block.conv2, block.conv3)] == [
        (62, 64, 1, 1), (61, 62, 3, 3), (256, 61, 1, 1)]
    assert pruned.arch["stages"][0]["blocks"][0]["widths"] == [62, 61]
    assert dict(pruned.blocks())["layer3.2"].conv2.out_channels == 255
    assert dict(model.blocks())["layer1.0"].conv2.weight.shape == (64, 64, 3, 3), "the parent is left untouched"
    # layer1 runs at 32x32, layer3 at 8x8
    weights_drop_1 = (64 * 64 - 62 * 64) + (64 * 64 - 61 * 62) * 9 + 256 * (64 - 61)
    weights_drop_3 = 256 * 9 + 1024  # layer3.2.conv2's filter and conv3's (1024 outputs) input channel
    assert count_parameters(model) - count_parameters(pruned) == weights_drop_1 + 2 * 5 + weights_drop_3 + 2
    assert count_flops(model, (3, 32, 32)) - count_flops(pruned, (3, 32, 32)) == (
        2 * weights_drop_1 * 32 * 32 + 2 * weights_drop_3 * 8 * 8)
    assert count_flops(pruned, (3, 32, 32)) == analytic_flops(pruned)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_pruned_model_reloads_from_weights_only_file(name, tmp_path):
    model = seeded_resnet(f"torchvision:{name}")
    pruned = LAYER.remove(model, LAYER.units(model)[:2])
    pruned = FILTER.remove(pruned, FILTER.units(pruned)[::37]).eval()
    save_model(pruned, tmp_path / "m.pt")
    reloaded = load_model(tmp_path / "m.pt")
    assert reloaded.arch == pruned.arch and reloaded.arch["model"] == f"torchvision:{name}"
    assert torch.equal(reloaded(X), pruned(X))


def test_kl_prefix_shortcut_gives_the_same_scores_as_full_forwards():
    model = seeded_resnet("torchvision:resnet50")
    ctx = CriterionContext(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
                           torch.zeros(8, dtype=torch.long), 0)
    filters = units(FILTER, model, {"layer1.1.conv2": {5}, "layer2.0.conv1": {3}, "layer3.4.conv2": {7},
                                    "layer4.2.conv1": {1}})
    assert KL.scores(model, FILTER, filters, ctx) == pytest.approx(KL.scores(Opaque(model), FILTER, filters, ctx),
                                                                  rel=1e-5, abs=1e-12)
    blocks = units(LAYER, model, {"layer2.2": None, "layer4.1": None})
    assert KL.scores(model, LAYER, blocks, ctx) == pytest.approx(KL.scores(Opaque(model), LAYER, blocks, ctx),
                                                                rel=1e-5)


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"state_dict": {"module." + k: v for k, v in s.items()}}])
def test_checkpoint_takes_a_plain_torchvision_state_dict(wrap, tmp_path, stem):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(wrap(reference.state_dict()), tmp_path / "tv.pt")
    stem("imagenet")
    model = create_model("torchvision:resnet18", 10, (3, 32, 32), "cifar10", checkpoint=str(tmp_path / "tv.pt"))
    assert torch.equal(model.eval()(X), reference(X))
    stem("cifar")  # torchvision's 7x7 stem convolution does not fit the 3x3 one
    with pytest.raises(HarnessError, match="conv1.weight"):
        create_model("torchvision:resnet18", 10, (3, 32, 32), "cifar10", checkpoint=str(tmp_path / "tv.pt"))


def test_pretrained_without_the_cached_file_says_where_to_put_it(tmp_path, monkeypatch):
    def no_network(url, *args, **kwargs):
        raise OSError(f"cannot reach {url}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)  # never a real download in a test
    with pytest.raises(HarnessError) as err:
        create_model("torchvision:resnet18", 10, (3, 32, 32), "cifar10", pretrained=True)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message


@pytest.mark.parametrize("side, fresh", [(32, {"fc.weight", "fc.bias", "conv1.weight"}), (64, {"fc.weight", "fc.bias"})])
def test_pretrained_imagenet_weights_fit_other_classes_and_stems(side, fresh, monkeypatch, capsys):
    imagenet = torchvision.models.resnet18().state_dict()  # stands in for the published file
    monkeypatch.setattr(torchvision_resnet, "load_url_state_dict", lambda url: imagenet)
    model = create_model("torchvision:resnet18", 10, (3, side, side), "cifar10", pretrained=True)
    state = model.state_dict()
    assert {k for k, v in state.items() if not torch.equal(v, imagenet[k])} == fresh
    assert model.fc.out_features == 10
    message = capsys.readouterr().err
    assert all(k in message for k in fresh) and "ResNet18_Weights.IMAGENET1K_V1" in message


@pytest.mark.slow
@needs_shared
def test_bench_prunes_resnet18_on_cifar(cifar_subset, tmp_path):
    result = run_cli("bench", "--model", "torchvision:resnet18", "--data-dir", str(cifar_subset), "--budget", "smoke",
                     "--iterations", "2", "--criterion", "l1", "--scratch-epochs", "0.1", "--candidate-epochs", "0.05",
                     "--finetune-epochs", "0.05", "--batch-size", "32", "--train-subset", "640", "--calib-size", "64",
                     "--test-subset", "100", "--runs-dir", str(tmp_path), "--name", "r18")
    assert result.returncode == 0, result.stderr
    rows = records.read_iterations(tmp_path / "r18")
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    flops = [r["flops"] for r in rows]
    assert all(a > b for a, b in zip(flops, flops[1:])), "every iteration removes something"
    assert all(r["decision"] in {"L", "F"} and len(r["candidates"]) == 2 for r in rows[1:])
    final = load_model(records.model_path(tmp_path / "r18", 2))
    assert final.arch["stem"] == "cifar" and count_flops(final, (3, 32, 32)) == rows[-1]["flops"]
    assert count_parameters(final) == rows[-1]["params"]
