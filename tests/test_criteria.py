import pytest
import torch

from conftest import seeded_resnet
from harness import plugins
from harness.api import CriterionContext

LAYER = plugins.get("structure", "resnet-block")
FILTER = plugins.get("structure", "resnet-filter")
KL = plugins.get("criterion", "kl")


def ctx(seed=0):
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return CriterionContext(x, torch.zeros(64, dtype=torch.long), seed)


class Opaque(torch.nn.Module):
    """The same network without forward_to/forward_from: forces whole-network forwards."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.arch = inner, inner.arch

    def forward(self, x):
        return self.inner(x)

    def blocks(self):
        return self.inner.blocks()

    def removable_blocks(self):
        return self.inner.removable_blocks()

    def residual_bn(self, site):
        return self.inner.residual_bn(site)

    def width_sites(self):
        return self.inner.width_sites()


def test_kl_is_zero_for_a_dead_filter_and_positive_otherwise():
    model = seeded_resnet()
    bn = dict(model.blocks())["layer2.1"].bn1
    bn.weight.data[3] = 0
    bn.bias.data[3] = 0
    units = [u for u in FILTER.units(model) if u.site == "layer2.1.conv1"]
    scores = KL.scores(model, FILTER, units, ctx())
    assert scores[3] == pytest.approx(0.0, abs=1e-12)
    assert min(s for i, s in enumerate(scores) if i != 3) > 0


def test_kl_prefix_shortcut_gives_the_same_scores_as_full_forwards():
    model = seeded_resnet()
    units = FILTER.units(model)[::23] + []
    fast = KL.scores(model, FILTER, units, ctx())
    slow = KL.scores(Opaque(model), FILTER, units, ctx())
    assert fast == pytest.approx(slow, rel=1e-6, abs=1e-12)
    layer_units = LAYER.units(model)
    assert KL.scores(model, LAYER, layer_units, ctx()) == pytest.approx(
        KL.scores(Opaque(model), LAYER, layer_units, ctx()), rel=1e-6)


def test_kl_ranks_blocks_by_how_much_they_change_the_output():
    model = seeded_resnet()
    blocks = dict(model.blocks())
    blocks["layer1.1"].bn2.weight.data *= 1e-3  # nearly silent residual branch
    blocks["layer1.1"].bn2.bias.data *= 1e-3
    scores = dict(zip([u.site for u in LAYER.units(model)], KL.scores(model, LAYER, LAYER.units(model), ctx())))
    assert min(scores, key=scores.get) == "layer1.1"


def test_l1_prefers_small_weights_and_is_size_normalised():
    model = seeded_resnet()
    block = dict(model.blocks())["layer3.1"]
    block.conv1.weight.data[5] *= 0.01
    units = FILTER.units(model)
    scores = dict(zip([u.key for u in units], plugins.get("criterion", "l1").scores(model, FILTER, units, ctx())))
    assert min(scores, key=scores.get) == "layer3.1.conv1:5"
    expected = float(block.conv1.weight[7].detach().abs().mean())
    assert scores["layer3.1.conv1:7"] == pytest.approx(expected, rel=1e-6)


def test_random_is_seeded():
    model = seeded_resnet()
    units = FILTER.units(model)
    rnd = plugins.get("criterion", "random")
    assert rnd.scores(model, FILTER, units, ctx(1)) == rnd.scores(model, FILTER, units, ctx(1))
    assert rnd.scores(model, FILTER, units, ctx(1)) != rnd.scores(model, FILTER, units, ctx(2))


TAYLOR = plugins.get("criterion", "taylor")


def labelled_ctx():
    g = torch.Generator().manual_seed(3)
    return CriterionContext(torch.randn(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g), 0)


def test_taylor_equals_gradient_times_the_ablated_parameters():
    model = seeded_resnet()
    c = labelled_ctx()
    units = [u for u in FILTER.units(model) if u.site == "layer3.0.conv1"][:6]
    scores = TAYLOR.scores(model, FILTER, units, c)
    bn = dict(model.blocks())["layer3.0"].bn1
    loss = torch.nn.functional.cross_entropy(model(c.calib_inputs), c.calib_labels)
    g_w, g_b = torch.autograd.grad(loss, [bn.weight, bn.bias])
    for unit, score in zip(units, scores):
        i = unit.index
        expected = abs(float(g_w[i] * bn.weight[i] + g_b[i] * bn.bias[i]))  # delta = -theta
        assert score == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_taylor_is_zero_for_a_dead_filter_and_leaves_the_model_unchanged():
    model = seeded_resnet()
    bn = dict(model.blocks())["layer2.1"].bn1
    bn.weight.data[3] = 0
    bn.bias.data[3] = 0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    units = [u for u in FILTER.units(model) if u.site == "layer2.1.conv1"]
    scores = TAYLOR.scores(model, FILTER, units, labelled_ctx())
    assert scores[3] == 0.0 and min(s for i, s in enumerate(scores) if i != 3) > 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    layer_scores = TAYLOR.scores(model, LAYER, LAYER.units(model), labelled_ctx())
    assert len(layer_scores) == 7 and all(s >= 0 for s in layer_scores)
