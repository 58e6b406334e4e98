"""The traced family and its structures: any torchvision/timm network pruned through
Torch-Pruning's channel groups and probed residual blocks, reloaded by replaying the log."""

import copy
import json

import pytest
import torch
from torch import nn

from conftest import needs_shared, run_cli
from harness import records, registry
from harness.measure import count_flops, count_parameters
from harness.models import create_model, load_model, save_model

SHAPE = (3, 32, 32)


def structure(name):
    return registry.get("structure", name)


def randomise_batch_norms(model, seed=0):
    """Random batch-norm scales and statistics, so no channel or block is trivially dead."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.rand(n, generator=g) * 0.4 - 0.2
            m.running_mean = torch.rand(n, generator=g) * 0.2 - 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5
    return model.eval()


def traced(name, seed=0):
    torch.manual_seed(seed)
    return randomise_batch_norms(create_model(name, 10, SHAPE, "cifar10"), seed)


def outputs(model, seed=1):
    with torch.no_grad():
        return model.eval()(torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("name, family", [("torchvision:resnet18", "torchvision:"), ("torchvision:mobilenet_v2", "traced:"),
                                          ("timm:convnext_atto", "traced:"), ("timm:vit_tiny_patch16_224", "timm:"),
                                          ("traced:torchvision:resnet18", "traced:")])
def test_names_go_to_the_family_that_claims_them(name, family):
    assert registry.get("model", name).name == family


def test_unknown_network_is_a_one_line_error_naming_examples():
    result = run_cli("bench", "--model", "torchvision:mobilenet_v9", "--budget", "smoke")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown torchvision model 'mobilenet_v9'" in result.stderr and "torchvision:mobilenet_v2" in result.stderr


def test_probe_offers_exactly_the_blocks_with_an_identity_shortcut():
    mobilenet = traced("torchvision:mobilenet_v2")
    sites = [u.site for u in structure("traced-block").units(mobilenet)]
    expected = [f"net.{name}" for name, m in mobilenet.net.named_modules()
                if type(m).__name__ == "InvertedResidual" and m.use_res_connect]
    assert sites == expected and len(sites) == 10
    convnext = traced("timm:convnext_atto")
    blocks = [f"net.{name}" for name, m in convnext.net.named_modules() if type(m).__name__ == "ConvNeXtBlock"]
    assert [u.site for u in structure("traced-block").units(convnext)] == blocks and len(blocks) == 12


@pytest.mark.parametrize("name", ["torchvision:mobilenet_v2", "timm:convnext_atto"])
def test_removed_blocks_equal_ablated_blocks_and_reload_by_replay(name, tmp_path):
    model, blocks = traced(name), structure("traced-block")
    units = blocks.units(model)[1:3]
    with blocks.ablate(model, units):
        ablated = outputs(model)
    child = blocks.remove(model, units)
    assert torch.allclose(outputs(child), ablated, atol=1e-5)
    assert count_parameters(child) < count_parameters(model) and count_flops(child, SHAPE) < count_flops(model, SHAPE)
    assert child.arch["removed"] == [{"blocks": sorted(u.site for u in units)}] and model.arch["removed"] == []
    save_model(child, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert torch.equal(outputs(again), outputs(child))


def test_removed_channel_groups_equal_ablated_ones_on_a_batch_norm_network():
    model, channels = traced("torchvision:mobilenet_v2"), structure("traced-channel")
    units = channels.units(model)
    assert len({u.site for u in units}) == 25 and len(units) == 9128
    chosen = [units[0], units[1], units[500], units[4000], units[-1]]
    with channels.ablate(model, chosen):
        ablated = outputs(model)
    assert not torch.allclose(ablated, outputs(model), atol=1e-4), "ablation changed nothing"
    child = channels.remove(model, chosen)
    assert torch.allclose(outputs(child), ablated, atol=1e-5)
    assert count_parameters(child) < count_parameters(model)


def test_pruned_convnext_reloads_from_its_log_through_several_operations(tmp_path):
    model = traced("timm:convnext_atto")
    blocks, channels = structure("traced-block"), structure("traced-channel")
    for step in range(3):  # depth, width, depth: each logged, each replayed on a fresh network
        st = channels if step == 1 else blocks
        model = st.remove(model, st.units(model)[:2] if st is blocks else st.units(model)[::97])
    assert [list(op) for op in model.arch["removed"]] == [["blocks"], ["channels"], ["blocks"]]
    json.dumps(model.arch)  # the spec is plain JSON: no pickled code
    save_model(model, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert torch.equal(outputs(again), outputs(model))
    assert count_flops(again, SHAPE) == count_flops(model, SHAPE)


def cifar_resnet18_pair():
    """The built-in torchvision:resnet18 (CIFAR stem) and the same network, same weights,
    as a traced network."""
    from harness.traced import TracedNetwork

    builtin = randomise_batch_norms(create_model("torchvision:resnet18", 10, SHAPE, "cifar10"))
    assert builtin.arch["stem"] == "cifar"
    arch = {"model": "test", "family": "traced", "input_shape": list(SHAPE), "removed": []}
    return builtin, TracedNetwork(arch, copy.deepcopy(builtin)).eval()


def test_generic_blocks_on_resnet18_are_the_builtin_ones_with_the_same_flops_and_parameters():
    builtin, generic = cifar_resnet18_pair()
    mine = [u.site.removeprefix("net.") for u in structure("traced-block").units(generic)]
    assert mine == builtin.removable_blocks() == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    drop = ["layer1.1", "layer3.1"]
    a = structure("resnet-block").remove(builtin, [u for u in structure("resnet-block").units(builtin) if u.site in drop])
    b = structure("traced-block").remove(generic, [u for u in structure("traced-block").units(generic)
                                                   if u.site.removeprefix("net.") in drop])
    assert count_flops(a, SHAPE) == count_flops(b, SHAPE) and count_parameters(a) == count_parameters(b)
    assert torch.allclose(outputs(a), outputs(b), atol=1e-5)


def test_generic_channels_on_resnet18_hold_the_builtin_filters_and_prune_them_identically():
    builtin, generic = cifar_resnet18_pair()
    mine = {u.key.removeprefix("net."): u for u in structure("traced-channel").units(generic)}
    theirs = {u.key: u for u in structure("resnet-filter").units(builtin)}
    assert set(theirs) <= set(mine)
    # the only other groups are the residual streams (one per stage), which the built-in
    # structure leaves alone: each couples several convolutions' outputs through the sums
    extra = {key.split(":")[0] for key in set(mine) - set(theirs)}
    assert extra == {"conv1", "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"}
    keys = ["layer1.0.conv1:3", "layer1.0.conv1:7", "layer2.1.conv1:0", "layer4.1.conv1:511", "layer4.1.conv1:100"]
    a = structure("resnet-filter").remove(builtin, [theirs[k] for k in keys])
    b = structure("traced-channel").remove(generic, [mine[k] for k in keys])
    assert count_flops(a, SHAPE) == count_flops(b, SHAPE) and count_parameters(a) == count_parameters(b)
    assert torch.allclose(outputs(a), outputs(b), atol=1e-5)


def test_criteria_read_a_traced_channel_through_its_whole_group():
    model, channels = traced("torchvision:mobilenet_v2"), structure("traced-channel")
    unit = next(u for u in channels.units(model) if u.site == "net.features.3.conv.1.0")
    # the group is rooted at the depthwise convolution; its weights are the expand convolution's
    # filter, the depthwise filter and the projection's input column (one channel of each); its
    # normalisation, the two batch norms' scales and shifts
    tensors = channels.weights(model, unit)
    assert sorted(tuple(t.shape) for t in tensors) == sorted([(1, 24, 1, 1), (1, 1, 3, 3), (24, 1, 1, 1)])
    assert len(channels.normalization(model, unit)) == 4
    # near the output: a random MobileNetV2 damps a change early in the network to ~1e-7 at the logits
    units = [u for u in channels.units(model) if u.site == "net.features.17.conv.1.0"][:3]
    ctx_inputs = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(2))
    from harness.api import CriterionContext

    ctx = CriterionContext(ctx_inputs, torch.arange(8) % 10, seed=0)
    for name in ("l1", "taylor", "kl"):
        scores = registry.get("criterion", name).scores(model, channels, units, ctx)
        # a channel a random network never activates scores 0 under kl and taylor: some must not
        assert len(scores) == 3 and all(s >= 0 for s in scores) and max(scores) > 0, name
        assert name != "l1" or len(set(scores)) == 3


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("name", ["torchvision:mobilenet_v2", "timm:convnext_atto"])
def test_bench_prunes_a_traced_network_with_both_candidates_every_iteration(name, cifar_subset, tmp_path):
    result = run_cli("bench", "--model", name, "--data-dir", str(cifar_subset), "--budget", "smoke",
                     "--iterations", "3", "--criterion", "l1", "--scratch-epochs", "0.1", "--candidate-epochs", "0.05",
                     "--finetune-epochs", "0.05", "--batch-size", "32", "--train-subset", "320", "--calib-size", "64",
                     "--val-size", "64", "--test-subset", "100", "--runs-dir", str(tmp_path), "--name", "run")
    assert result.returncode == 0, result.stderr
    rows = records.read_iterations(tmp_path / "run")
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert all(sorted(c["type"] for c in r["candidates"]) == ["filter", "layer"] for r in rows[1:])
    for row in rows:  # every kept model reloads from its file alone, with the recorded numbers
        model = load_model(records.model_path(tmp_path / "run", row["iteration"]))
        assert count_flops(model, SHAPE) == row["flops"] and count_parameters(model) == row["params"]
    assert rows[-1]["flops"] < rows[0]["flops"]


def test_grouped_convolutions_lose_one_channel_per_group_and_every_candidate_runs():
    model, channels = traced("torchvision:resnext50_32x4d"), structure("traced-channel")
    conv = model.net.layer1[0].conv2  # 128 channels in 32 groups
    site = "net.layer1.0.conv2"
    units = [u for u in channels.units(model) if u.site == site]
    assert conv.groups == 32 and len(units) == 128 // 32
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    chosen = units[:2] + [u for u in channels.units(model) if u.site == "net.layer1.0.conv1"][:3]
    with channels.ablate(model, chosen):
        ablated = outputs(model)
    child = channels.remove(model, chosen)
    # a unit is one channel in each of the 32 groups, on both sides of the grouped convolution
    assert child.net.layer1[0].conv2.out_channels == 128 - 2 * 32 and child.net.layer1[0].conv2.in_channels == 128 - 3 * 32
    assert torch.allclose(outputs(child), ablated, atol=1e-5)
    child.train()(x)  # and in train mode


@pytest.mark.parametrize("name", ["torchvision:mobilenet_v2", "torchvision:regnet_x_400mf", "timm:convnext_atto"])
def test_width_prices_from_the_shapes_equal_what_a_trial_cut_saves(name):
    from harness.measure import count_filters

    model, channels = traced(name), structure("traced-channel")
    sites = {}
    for u in channels.units(model):
        sites.setdefault(u.site, u)
    for measure, size in (("flops", lambda m: count_flops(m, SHAPE)), ("params", count_parameters),
                          ("filters", count_filters)):
        prices = channels.prices(model, measure)
        for site, unit in list(sites.items())[::5]:
            assert prices[site] == size(model) - size(channels.remove(model, [unit])), (measure, site)


def test_training_only_branches_are_pruned_with_the_trunk():
    model, channels = traced("torchvision:googlenet"), structure("traced-channel")
    assert model.net.aux1 is not None
    # inception4a's output feeds inception4b and, in train mode only, the first auxiliary classifier
    units = [u for u in channels.units(model) if u.site == "net.inception4a.branch4.1.conv"][:5]
    child = channels.remove(model, units)
    assert child.net.aux1.conv.conv.in_channels == model.net.aux1.conv.conv.in_channels - 5
    x = torch.randn(2, *SHAPE)
    assert child.train()(x).shape == (2, 10)  # the trunk's logits: the auxiliary ones train nothing here
    assert len(child.forward_all(x)) == 3
    # the auxiliary classifiers' outputs are classes: never offered
    assert not any(u.site.startswith("net.aux") and u.site.endswith("fc2") for u in channels.units(model))


def test_a_convolution_classifier_is_the_classifier():
    model, channels = traced("torchvision:squeezenet1_0"), structure("traced-channel")
    assert model.classifier == "classifier.1"
    assert model.forward_features(torch.randn(2, *SHAPE)).shape[0] == 2
    assert "net.classifier.1" not in {u.site for u in channels.units(model)}


def test_ghostnet_bottlenecks_are_blocks_ablated_through_both_paths_of_their_ghost_module():
    model, blocks = traced("timm:ghostnet_100"), structure("traced-block")
    units = blocks.units(model)
    identity = [f"net.{n}" for n, m in model.net.named_modules()
                if type(m).__name__ == "GhostBottleneck" and len(m.shortcut) == 0 and m.conv_dw is None]
    assert [u.site for u in units] == identity and len(units) == 11
    for unit in units[::4]:
        with blocks.ablate(model, [unit]):
            ablated = outputs(model)
        assert torch.allclose(outputs(blocks.remove(model, [unit])), ablated, atol=1e-5)


def test_plain_layers_are_blocks_on_request_and_their_ablation_is_the_identity():
    model, blocks = traced("torchvision:vgg11_bn"), structure("traced-block")
    assert blocks.units(model) == []
    blocks.configure({"plain_layers": True})
    units = blocks.units(model)
    # 256->256 and 512->512 convolutions right after a ReLU (features.22 comes after a max-pool)
    convs = [f"net.features.{i}" for i, m in enumerate(model.net.features) if isinstance(m, nn.Conv2d)
             and m.in_channels == m.out_channels and isinstance(model.net.features[i - 1], nn.ReLU)]
    assert [u.site for u in units] == convs and len(convs) == 3
    with blocks.ablate(model, units[-2:]):
        ablated = outputs(model)
    child = blocks.remove(model, units[-2:])
    # each with its batch norm and the ReLU after it, which passes the ReLU before it unchanged
    index = [int(c.rpartition(".")[2]) for c in convs[-2:]]
    assert child.arch["removed"] == [{"blocks": sorted(f"net.features.{i + k}" for i in index for k in range(3))}]
    assert torch.allclose(outputs(child), ablated, atol=1e-5)
    # and it trains: no in-place ReLU left to overwrite what the one before needs for its gradient
    child.train()(torch.randn(2, *SHAPE)).sum().backward()


def test_a_state_dicts_metadata_survives_saving_and_loading(tmp_path):
    model = traced("torchvision:mnasnet0_5")  # MNASNet refuses a state dict without its version
    assert model.state_dict()._metadata["net"]["version"] == 2
    save_model(model, tmp_path / "m.pt")
    assert torch.equal(outputs(load_model(tmp_path / "m.pt")), outputs(model))


def test_a_network_torch_pruning_cannot_trace_is_one_line_saying_where_it_failed():
    from harness.errors import HarnessError

    model = traced("torchvision:shufflenet_v2_x0_5")  # its channel shuffle is a reshape Torch-Pruning cannot map
    with pytest.raises(HarnessError, match=r"^Torch-Pruning \S+ cannot trace the channels of ShuffleNetV2: "
                                           r"ZeroDivisionError in its update_reshape_index_mapping") as caught:
        structure("traced-channel").supports(model)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["torchvision:swin_v2_t", "torchvision:swin_t", "timm:swin_tiny_patch4_window7_224"])
def test_windowed_attention_with_a_gathered_position_bias_is_refused_before_tracing(name, monkeypatch):
    """Swin V2 (and MaxViT) filled the memory inside Torch-Pruning's grouping and timm's Swin cut
    channels its bias table does not follow: refused in one line, before anything is traced."""
    import torch_pruning as tp

    from harness.errors import HarnessError

    model = create_model(name, 10, (3, 64, 64) if name.startswith("torchvision") else (3, 224, 224), "cifar10")
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", lambda *a, **k: pytest.fail("traced"))
    with pytest.raises(HarnessError, match=r"^Torch-Pruning \S+ cannot trace the channels of \w+: its attention adds "
                                           r"a relative-position bias gathered by index \(\S+relative_position_index\)") as caught:
        structure("traced-channel").supports(model)
    assert "\n" not in str(caught.value)


def test_traced_networks_default_to_l1_and_the_others_to_kl():
    from harness.config import BenchConfig
    from harness.resolve import resolve

    assert resolve(BenchConfig(model="torchvision:mobilenet_v2")).config.criterion == "l1"
    assert resolve(BenchConfig(model="resnet20")).config.criterion == "kl"
    assert resolve(BenchConfig(model="torchvision:mobilenet_v2", criterion="kl")).config.criterion == "kl"


def test_a_candidate_that_does_not_run_in_train_mode_stops_in_one_line_and_is_left_as_it_was():
    """harness.candidates.checked runs each candidate in both modes before its fine-tune: a
    training-only branch left unpruned (GoogLeNet's auxiliary classifier before issue 24) is
    one line there, not a failure inside the fine-tune."""
    from harness.candidates import checked
    from harness.errors import HarnessError

    class AuxOnlyInTraining(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk, self.bn, self.aux = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(5, 2)

        def forward(self, x):
            y = self.bn(self.trunk(x))
            if self.training:
                self.aux(y.flatten(1))  # 8 channels reach a layer that reads 5: the unpruned branch
            return y.mean((2, 3))

    model = AuxOnlyInTraining().eval()
    stats = model.bn.running_mean.clone()
    with pytest.raises(HarnessError, match=r"^the filter candidate does not run in train mode: RuntimeError: ") as caught:
        checked(model, "filter", torch.randn(2, 3, 6, 6))
    assert "\n" not in str(caught.value)
    assert not model.training and torch.equal(model.bn.running_mean, stats)
    model.aux = nn.Linear(8 * 4 * 4, 2)
    assert checked(model, "filter", torch.randn(2, 3, 6, 6)) is model
